"""Both sidecars under Knative v1.10.2's environment (``tests/kube/peers/bin/queue-v1.10``).

v1.10.2's controller turns request metrics on (``SERVING_REQUEST_METRICS_BACKEND=prometheus``)
with the OpenCensus names (``revision_*``) on 9091. Cases compare the same things as the
v1.23.0 modules, on a smaller set.
"""

from __future__ import annotations

import time

import pytest

from tests.conformance import promtext
from tests.conformance.client import app_saw, get
from tests.conformance.compare import on_both, same
from tests.conformance.peers import Pair, Sidecar
from tests.conformance.test_http_v123 import websocket_echo
from tests.conformance.test_probes_stats_v123 import answer, counted

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(60)]

KUBE = "kube-probe/1.30"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.mark.parametrize(
    "headers",
    [
        [("X-One", "1"), ("X-Forwarded-For", "203.0.113.7")],
        [("Connection", "X-Secret"), ("X-Secret", "s"), ("Keep-Alive", "1")],
        [("Connection", "Forwarded"), ("Forwarded", "for=6.6.6.6")],
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "a.example")],
    ],
    ids=["xff appended", "connection-named", "connection-named forwarded", "forwarded shim"],
)
def test_headers_the_app_receives(pair_v1102: Pair, headers: list[tuple[str, str]]) -> None:
    same(pair_v1102, lambda s: app_saw(get(s.port, "/headers", headers)))


@pytest.mark.parametrize(
    "headers",
    [
        [("User-Agent", KUBE), ("K-Network-Probe", "queue")],
        [("User-Agent", KUBE)],
        [("K-Kubelet-Probe", "queue"), ("K-Network-Probe", "queue")],
        [("K-Network-Probe", "probe"), ("K-Network-Hash", "abc")],
    ],
    ids=["kubelet", "kubelet without header", "k-kubelet-probe header", "network probe"],
)
def test_probe_answers(pair_v1102: Pair, headers: list[tuple[str, str]]) -> None:
    status, _ = same(pair_v1102, lambda s: answer(get(s.port, "/", headers)))
    assert status in (200, 400)


def test_status_passes_through(pair_v1102: Pair) -> None:
    assert same(pair_v1102, lambda s: get(s.port, "/status/418").comparable())[0] == 418


def test_stat_counts(pair_v1102: Pair) -> None:
    assert same(pair_v1102, lambda s: counted(s, 2, 1)) == (3, 1)


def scrape(s: Sidecar) -> str:
    resp = get(s.metrics_port, "/metrics")
    assert resp.status == 200, resp
    return resp.body.decode()


def test_revision_metric_names(pair_v1102: Pair) -> None:
    names = same(
        pair_v1102, lambda s: sorted(n for n in promtext.names(scrape(s)) if "revision_" in n)
    )
    assert "revision_request_count" in names and "revision_app_request_count" in names


def test_revision_request_counts_and_labels(pair_v1102: Pair) -> None:
    def script(s: Sidecar) -> tuple[Samples, Samples]:
        for path in ("/status/200", "/status/500"):
            get(s.port, path)
        text = scrape(s)
        return promtext.samples(text, "revision_request_count"), promtext.samples(
            text, "revision_app_request_count"
        )

    requests, app_requests = same(pair_v1102, script)
    assert requests and app_requests


def test_latency_buckets(pair_v1102: Pair) -> None:
    def script(s: Sidecar) -> list[str]:
        buckets = promtext.samples(scrape(s), "revision_request_latencies_bucket")
        return sorted({dict(labels)["le"] for _, labels in buckets}, key=float)

    assert same(pair_v1102, script)[-1] == "+Inf"


def test_process_metrics_only_from_sluice(pair_v1102: Pair) -> None:
    """Deliberate difference: Sluice adds the standard ``process_*`` collector on 9091.

    v1.10.2's OpenCensus Prometheus exporter serves only the ``revision_*`` views; Sluice
    serves the same views plus ``process_*`` (CPU, RSS, fds), which Prometheus scrapers
    ignore unless asked for and which no Knative component reads from this port.
    """
    go, sluice = on_both(pair_v1102, lambda s: promtext.names(scrape(s)))
    assert go <= sluice and all(n.startswith("process_") for n in sluice - go)


# The websocket cases come last: the upgrade is counted differently (below), and the count
# comparisons above must not see it.


def test_websocket_upgrade_echo(pair_v1102: Pair) -> None:
    assert same(pair_v1102, websocket_echo)[2] == b"echo:hi there"


def test_upgrade_status_in_request_metrics(pair_v1102: Pair) -> None:
    """Deliberate difference: Sluice counts a websocket upgrade under ``response_code="101"``.

    Go's metrics wrapper never sees the ``101`` (the reverse proxy writes it on the hijacked
    connection) and records its default, ``200``. Sluice records the status the client got;
    a ``1xx`` class is what the response was, and it keeps upgrades out of 2xx success rates.
    """

    def codes(s: Sidecar) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_, labels), value in promtext.samples(scrape(s), "revision_request_count").items():
            code = dict(labels)["response_code"]
            out[code] = out.get(code, 0) + value
        return out

    def settled(s: Sidecar) -> dict[str, float]:
        # A tunnel an earlier test closed is recorded a moment after its client left: wait
        # until the counts stop moving, so that it is not counted as this test's.
        last, deadline = codes(s), time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = codes(s)
            if now == last:
                break
            last = now
        return last

    def script(s: Sidecar) -> dict[str, float]:
        before = settled(s)
        websocket_echo(s)
        # Recorded when the tunnel closes, which both notice a moment after the client.
        deadline = time.monotonic() + 5
        while (after := codes(s)) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}

    go, sluice = on_both(pair_v1102, script)
    assert go == {"200": 1} and sluice == {"101": 1}
