"""The breaker (CC 1, queue full), v1.23.0 env.

``containerConcurrency: 1`` gives both sidecars one slot and a queue of ten (Knative's
``10 x CC``), so the twelfth concurrent request is refused at once. Held requests are
released by closing their connections; each case waits until the app is idle again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conformance.client import build, get
from tests.conformance.compare import same
from tests.conformance.peers import V123, Pair, Sidecar, running_pair

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(90)]

Answer = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture(scope="module")
def cc1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair(V123, tmp_path_factory.mktemp("cc1"), CONTAINER_CONCURRENCY="1") as p:
        yield p


def app_inflight(s: Sidecar) -> int:
    return int(get(s.app_port, "/inflight", timeout=5).body)


def wait_app_inflight(s: Sidecar, want: int) -> None:
    deadline = time.monotonic() + 30
    while app_inflight(s) != want:
        assert time.monotonic() < deadline, f"app never had {want} requests in flight"
        time.sleep(0.02)


def fill_breaker(s: Sidecar, extra: list[tuple[str, list[tuple[str, str]]]]) -> list[Answer]:
    """Occupy the slot and the ten queue places with 2 s requests, then send ``extra``."""
    socks = []
    try:
        for _ in range(11):
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            socks.append(sock)
            sock.sendall(build("/sleep/2000"))
        wait_app_inflight(s, 1)
        # The ten queued requests cannot be observed from outside: give both proxies a
        # moment to read their heads (they are already on the wire).
        time.sleep(0.5)
        answers: list[Answer] = []
        for path, headers in extra:
            answers.append(get(s.port, path, headers, timeout=5).comparable())
        return answers
    finally:
        for sock in socks:
            sock.close()
        wait_app_inflight(s, 0)


def test_queue_full_is_503(cc1: Pair) -> None:
    (answer,) = same(cc1, lambda s: fill_breaker(s, [("/status/200", [])]))
    assert answer[0] == 503 and answer[2] == b"pending request queue full\n"


def test_probes_answered_while_the_queue_is_full(cc1: Pair) -> None:
    probes = [
        ("/", [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")]),
        ("/", [("K-Network-Probe", "probe"), ("K-Network-Hash", "h")]),
    ]
    answers = same(cc1, lambda s: fill_breaker(s, probes))
    assert [a[0] for a in answers] == [200, 200]


def test_cc1_serialises_requests(cc1: Pair) -> None:
    def script(s: Sidecar) -> tuple[list[int], bool]:
        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            statuses = list(pool.map(lambda _: get(s.port, "/sleep/400").status, range(3)))
        return statuses, time.monotonic() - started >= 1.2

    assert same(cc1, script) == ([200, 200, 200], True)


def test_cc1_plain_request(cc1: Pair) -> None:
    assert same(cc1, lambda s: get(s.port, "/status/200").comparable())[0] == 200
