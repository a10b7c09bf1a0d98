"""Probe answers and the autoscaler's protobuf ``Stat`` (port 9090), v1.23.0 env, CC 0.

Probe answers are compared whole (``Response.comparable``). ``Stat`` reports are compared
field by field except ``process_uptime`` and ``timestamp`` (clocks): both sidecars report
once a second, so counts are summed over the distinct reports seen while polling (a report
is told apart by its ``process_uptime``) until the expected total arrives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from proxy.dataplane.autoscaler_stat import Stat
from proxy.dataplane.autoscaler_stat_pb import decode_stat
from tests.conformance.client import Response, app_saw, get
from tests.conformance.compare import same
from tests.conformance.peers import Pair, Sidecar

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(60)]

KUBE = "kube-probe/1.30"
ACTIVATOR = "Knative-Activator-Probe"
AUTOSCALER = "Knative-Autoscaling-Probe"

PROBES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "kubelet": ("/", [("User-Agent", KUBE), ("K-Network-Probe", "queue")]),
    "kubelet on another path": ("/healthz", [("User-Agent", KUBE), ("K-Network-Probe", "queue")]),
    "kubelet without probe header": ("/", [("User-Agent", KUBE)]),
    "kubelet with a wrong probe value": ("/", [("User-Agent", KUBE), ("K-Network-Probe", "x<y")]),
    "activator probe": ("/", [("User-Agent", ACTIVATOR), ("K-Network-Probe", "queue")]),
    "autoscaler probe": ("/", [("User-Agent", AUTOSCALER), ("K-Network-Probe", "queue")]),
    "network probe with hash": ("/", [("K-Network-Probe", "probe"), ("K-Network-Hash", "abc")]),
    "network probe without hash": ("/", [("K-Network-Probe", "probe")]),
    "k-network-probe queue, no probe agent": ("/", [("K-Network-Probe", "queue")]),
}


@pytest.mark.parametrize(("path", "headers"), PROBES.values(), ids=PROBES.keys())
def test_probe_answers(pair: Pair, path: str, headers: list[tuple[str, str]]) -> None:
    status, _ = same(pair, lambda s: answer(get(s.port, path, headers)))
    assert status in (200, 400)


def answer(resp: Response) -> tuple[int, object]:
    """A probe's answer whole, or, when the request went on to the app, what the app saw."""
    if resp.header("content-type") == "application/json; charset=utf-8":
        return resp.status, app_saw(resp)
    return resp.status, resp.comparable()


def test_k_kubelet_probe_header_goes_to_the_app(pair: Pair) -> None:
    # Fixed by this suite: under v1.23.0 Go's drainer checks the User-Agent only (knative.dev/
    # pkg dropped the header), so the request reaches the app; v1.10.2's answered it
    # (test_v1102.py). Sluice answered it as a probe under both contracts.
    headers = [("K-Kubelet-Probe", "true"), ("K-Network-Probe", "queue")]
    status, seen = same(pair, lambda s: answer(get(s.port, "/", headers)))
    assert status == 200 and ("k-kubelet-probe", "true") in seen  # type: ignore[operator]


def test_k_kubelet_probe_header_is_not_counted(pair: Pair) -> None:
    def script(s: Sidecar) -> tuple[float, float]:
        return counted(s, 1, 0, [[("K-Kubelet-Probe", "true")]] * 3)

    assert same(pair, script) == (1, 0)


def test_head_probe(pair: Pair) -> None:
    headers = [("User-Agent", KUBE), ("K-Network-Probe", "queue")]
    assert same(pair, lambda s: get(s.port, "/", headers, method="HEAD").comparable())[0] == 200


def test_probe_with_body(pair: Pair) -> None:
    headers = [("K-Network-Probe", "probe"), ("K-Network-Hash", "h1")]
    resp = same(pair, lambda s: get(s.port, "/", headers, method="POST", body=b"x").comparable())
    assert resp[0] == 200 and ("k-network-hash", "h1") in resp[1]


def fetch_stat(s: Sidecar) -> Stat:
    resp = get(s.stats_port, "/metrics", [("Accept", "application/protobuf")], timeout=5)
    assert resp.status == 200, resp
    return decode_stat(resp.body)


def test_stats_port_answers_protobuf(pair: Pair) -> None:
    def script(s: Sidecar) -> tuple[int, str | None]:
        resp = get(s.stats_port, "/metrics", [("Accept", "application/protobuf")])
        return resp.status, resp.header("content-type")

    assert same(pair, script) == (200, "application/protobuf")


def test_stats_port_ignores_accept(pair: Pair) -> None:
    def script(s: Sidecar) -> tuple[int, str | None]:
        resp = get(s.stats_port, "/metrics", [("Accept", "text/plain")])
        return resp.status, resp.header("content-type")

    assert same(pair, script) == (200, "application/protobuf")


def test_stats_port_other_path_404(pair: Pair) -> None:
    assert same(pair, lambda s: get(s.stats_port, "/other").status) == 404


def quiet_stat(s: Sidecar) -> Stat:
    """The first report of a second without traffic (the first one comes a second after start)."""
    deadline = time.monotonic() + 5
    while True:
        stat = fetch_stat(s)
        if stat.request_count == 0 and stat.process_uptime > 0:
            return stat
        assert time.monotonic() < deadline, "no quiet report"
        time.sleep(0.1)


def test_quiet_stat_fields(pair: Pair) -> None:
    stat = same(pair, lambda s: replace(quiet_stat(s), process_uptime=0, timestamp=0))
    assert stat == Stat(pod_name="hello-00001-deployment-6d9f8b7c5-x2v4q")


def test_process_uptime_grows(pair: Pair) -> None:
    def script(s: Sidecar) -> bool:
        first = fetch_stat(s).process_uptime
        deadline = time.monotonic() + 3
        while fetch_stat(s).process_uptime == first and time.monotonic() < deadline:
            time.sleep(0.1)
        return fetch_stat(s).process_uptime > first > 0

    assert same(pair, script) is True


def counted(
    s: Sidecar, plain: int, proxied: int, uncounted: Sequence[Sequence[tuple[str, str]]] = ()
) -> tuple[float, float]:
    """Send ``plain`` + ``proxied`` requests, then sum the counts of the reports that follow.

    ``uncounted`` requests (header lists, to ``/``) go first, after the quiet report: if
    either side counted them, its sum comes out higher.
    """
    seen: dict[float, Stat] = {}
    quiet = quiet_stat(s).process_uptime  # earlier cases' traffic is not counted
    for headers in uncounted:
        get(s.port, "/", headers)
    for _ in range(plain):
        assert get(s.port, "/status/200").status == 200
    for _ in range(proxied):
        assert get(s.port, "/status/200", [("K-Proxy-Request", "activator")]).status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stat = fetch_stat(s)
        if stat.process_uptime != quiet:
            seen[stat.process_uptime] = stat
        if sum(x.request_count for x in seen.values()) >= plain + proxied:
            break
        time.sleep(0.1)
    return (
        sum(x.request_count for x in seen.values()),
        sum(x.proxied_request_count for x in seen.values()),
    )


def test_request_count_in_stat(pair: Pair) -> None:
    assert same(pair, lambda s: counted(s, 4, 0)) == (4, 0)


def test_k_proxy_request_counts_as_proxied(pair: Pair) -> None:
    assert same(pair, lambda s: counted(s, 2, 3)) == (5, 3)


def test_probes_are_not_counted(pair: Pair) -> None:
    def script(s: Sidecar) -> tuple[float, float]:
        return counted(s, 1, 0, [[("User-Agent", KUBE), ("K-Network-Probe", "queue")]] * 3)

    assert same(pair, script) == (1, 0)


def test_concurrency_of_a_slow_request_is_reported(pair: Pair) -> None:
    def script(s: Sidecar) -> bool:
        import threading

        t = threading.Thread(target=get, args=(s.port, "/sleep/1500"), daemon=True)
        t.start()
        busy = False
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not busy:
            busy = fetch_stat(s).average_concurrent_requests > 0
            time.sleep(0.1)
        t.join(timeout=10)
        return busy

    assert same(pair, script) is True
