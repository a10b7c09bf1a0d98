"""Drain after SIGTERM, v1.23.0 env: probes fail at once, traffic is still served.

Both sidecars get SIGTERM (the kubelet's stop); both then wait for a quiet period of 30 s
without requests before closing (Go's ``drainSleepDuration``, Sluice's default
``SLUICE_DRAIN_QUIET_SECONDS``), far longer than these cases, which run inside it; the
fixture then kills both.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.conformance.client import app_saw, get
from tests.conformance.compare import same
from tests.conformance.peers import V123, Pair, Sidecar, running_pair

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(60)]

KUBELET = [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")]


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair(V123, tmp_path_factory.mktemp("drain")) as p:
        for s in p.both():
            os.kill(s.proc.pid, signal.SIGTERM)
        for s in p.both():
            deadline = time.monotonic() + 10
            while get(s.port, "/", KUBELET).status != 503:
                assert time.monotonic() < deadline, f"{s.kind} never started draining"
                time.sleep(0.02)
        yield p


PROBES = {
    "kubelet": KUBELET,
    "activator": [("User-Agent", "Knative-Activator-Probe"), ("K-Network-Probe", "queue")],
    "autoscaler": [("User-Agent", "Knative-Autoscaling-Probe"), ("K-Network-Probe", "queue")],
    "network probe": [("K-Network-Probe", "probe"), ("K-Network-Hash", "h")],
}


@pytest.mark.parametrize("headers", PROBES.values(), ids=PROBES.keys())
def test_probes_fail_while_draining(drained: Pair, headers: list[tuple[str, str]]) -> None:
    answer = same(drained, lambda s: get(s.port, "/", headers).comparable())
    assert answer[0] == 503 and answer[2] == b"shutting down\n"


def test_traffic_is_served_while_draining(drained: Pair) -> None:
    seen = same(drained, lambda s: app_saw(get(s.port, "/headers", [("X-A", "1")])))
    assert ("x-a", "1") in seen


def test_status_passes_through_while_draining(drained: Pair) -> None:
    assert same(drained, lambda s: get(s.port, "/status/201").comparable())[0] == 201


def test_stats_still_answer_while_draining(drained: Pair) -> None:
    def script(s: Sidecar) -> tuple[int, str | None]:
        resp = get(s.stats_port, "/metrics")
        return resp.status, resp.header("content-type")

    assert same(drained, script) == (200, "application/protobuf")


def test_both_still_running(drained: Pair) -> None:
    assert same(drained, lambda s: s.proc.poll()) is None
