"""The queue-proxy in-process against scripted upstreams (reference §1.4 to §1.16, §5.2 to §5.7).

Each test builds a real ``QueueProxy`` from a ``Config`` and starts its servers on loopback
ports chosen by the kernel (the reporter task and the warm-up probe are not started, so stats
windows are closed only when a test calls ``reporter.report``). Short timeouts and quiet
periods are set on the shared ``QueueProxyState``/config so every test runs in well under a
second of waiting. Clients speak raw HTTP/1.1, so bodies are checked byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import queueproxy.handler as qp_handler
import queueproxy.main as qp_main
from proxy.client import UpstreamConnection
from proxy.dataplane.autoscaler_stat import Stat, encode_stat
from proxy.dataplane.autoscaler_stat_pb import decode_stat
from proxy.dataplane.breaker import Breaker
from proxy.dataplane.concurrency import RequestStats
from proxy.dataplane.deadline import Deadline
from proxy.forward import Forwarding
from queueproxy.config import Config
from queueproxy.main import QueueProxy, StatsReporter
from queueproxy.readiness import parse_probe
from tests.component.engine_harness import (
    HOST,
    EngineRig,
    Message,
    RawClient,
    ScriptedUpstream,
    UpstreamConn,
)
from tests.ports import closed_port

pytestmark = pytest.mark.timeout(15)

KUBELET_PROBE = b"User-Agent: kube-probe/1.30\r\nK-Network-Probe: queue\r\n"
QUEUE_FULL = b"pending request queue full\n"
SHUTTING_DOWN = b"shutting down\n"
REQUEST_TIMEOUT = b"request timeout"


def make_config(user_port: int, **overrides: Any) -> Config:
    """A valid config for a revision ``ns/rev`` of service ``svc``, pod ``pod``."""
    fields: dict[str, Any] = {
        "namespace": "ns",
        "configuration": "cfg",
        "revision": "rev",
        "pod_name": "pod",
        "pod_ip": "10.0.0.1",
        "serving_port": 8012,
        "tls_port": 8112,
        "user_port": user_port,
        "container_concurrency": 0,
        "revision_timeout_seconds": 300,
        "logging_config": "{}",
        "logging_level": "info",
        "service": "svc",
        "request_metrics_backend": "prometheus",
        "bind_host": HOST,
    }
    fields.update(overrides)
    return Config(**fields)


async def eventually(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait for in-process state that has no event to await (a breaker counter)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() >= deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Held:
    """An upstream script that parks each request until the test releases it."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[tuple[Message, asyncio.Event]] = asyncio.Queue()
        self.requests: list[Message] = []

    async def __call__(self, conn: UpstreamConn) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                msg = await conn.request(timeout=30)
                self.requests.append(msg)
                release = asyncio.Event()
                self.arrivals.put_nowait((msg, release))
                await release.wait()
                await conn.respond(body=b"ok:" + target(msg))

    async def next(self, timeout: float = 5.0) -> tuple[Message, asyncio.Event]:
        return await asyncio.wait_for(self.arrivals.get(), timeout)


def target(msg: Message) -> bytes:
    return msg.first_line.split(b" ")[1]


class QpRig:
    """Upstreams, clients and queue-proxies for one test, all torn down at the end."""

    def __init__(self) -> None:
        self.engine = EngineRig()
        self.qps: list[QueueProxy] = []

    async def upstream(self, script: Any = None) -> ScriptedUpstream:
        if script is None:
            return await self.engine.upstream()
        return await self.engine.upstream(script)

    async def start(self, user_port: int, **overrides: Any) -> QueueProxy:
        qp = QueueProxy(make_config(user_port, **overrides))
        self.qps.append(qp)
        for server in (qp.main, qp.admin, qp.stats_server, qp.metrics_server):
            if server is not None:
                await server.start(HOST, 0)
        return qp

    async def client(self, port: int) -> RawClient:
        return await self.engine.client(port)

    async def get(self, port: int, path: bytes = b"/", extra: bytes = b"") -> Message:
        client = await self.client(port)
        return await client.get(path, extra)

    async def close(self) -> None:
        for client in self.engine.clients:
            client.writer.transport.abort()
        for qp in self.qps:
            qp.drainer.reset()
            for server in (qp.main, qp.admin, qp.stats_server, qp.metrics_server):
                if server is not None:
                    await server.shutdown(grace=0.2)
            qp.pool.close()
        await self.engine.close()


@pytest.fixture
async def rig() -> AsyncIterator[QpRig]:
    r = QpRig()
    try:
        yield r
    finally:
        await r.close()


async def held_qp(rig: QpRig, **overrides: Any) -> tuple[QueueProxy, Held, ScriptedUpstream]:
    held = Held()
    up = await rig.upstream(held)
    qp = await rig.start(up.port, **overrides)
    return qp, held, up


def breaker_of(qp: QueueProxy) -> Breaker:
    breaker = qp.state.breaker
    assert breaker is not None
    return breaker


async def scrape_stat(rig: QpRig, qp: QueueProxy, extra: bytes = b"") -> tuple[Message, Stat]:
    resp = await rig.get(qp.stats_server.port, b"/metrics", extra)
    return resp, decode_stat(resp.body)


async def scrape_metrics(rig: QpRig, qp: QueueProxy) -> str:
    assert qp.metrics_server is not None
    resp = await rig.get(qp.metrics_server.port, b"/metrics")
    assert resp.status == 200
    return resp.body.decode()


BASE_LABELS = 'configuration_name="cfg",container_name="queue-proxy",namespace_name="ns"'


def request_count_line(code: int, tag: str, n: int) -> str:
    return (
        f'revision_request_count{{{BASE_LABELS},pod_name="pod",response_code="{code}",'
        f'response_code_class="{code // 100}xx",revision_name="rev",route_tag="{tag}",'
        f'service_name="svc"}} {n}'
    )


def app_count_line(code: int, n: int) -> str:
    return (
        f'revision_app_request_count{{{BASE_LABELS},pod_name="pod",response_code="{code}",'
        f'response_code_class="{code // 100}xx",revision_name="rev",service_name="svc"}} {n}'
    )


def queue_depth_line(n: int) -> str:
    return (
        f'revision_queue_depth{{{BASE_LABELS},pod_name="pod",response_code="",'
        f'response_code_class="",revision_name="rev",service_name="svc"}} {n}'
    )


def lines_of(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


ROUTES = pytest.mark.parametrize("route", ["cold", "warm"])
"""``warm``: a first request leaves an idle upstream connection, so the checked request can
take the handler's task-free fast path; ``cold``: it is the first and takes the task path."""


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Targets of the requests forwarded from callbacks (``start`` without ``run``, which
    the task path awaits)."""
    calls: list[bytes] = []
    real = qp_handler._Request.start

    def spy(self: Forwarding, conn: UpstreamConnection | None) -> None:
        if self.waiter is None:
            calls.append(self.ex.target)
        real(self, conn)

    monkeypatch.setattr(qp_handler._Request, "start", spy)
    return calls


async def prepare(rig: QpRig, qp: QueueProxy, route: str, held: Held | None = None) -> None:
    """For ``warm``, serve ``/warm`` so that an idle upstream connection is pooled."""
    if route == "cold":
        return
    task = asyncio.create_task(rig.get(qp.main.port, b"/warm"))
    if held is not None:
        _, release = await held.next()
        release.set()
    assert (await task).status == 200


def after_warm_up(script: Callable[[UpstreamConn, Message], Awaitable[None]]) -> Any:
    """An upstream script that answers ``/warm`` requests and runs ``script`` on the next."""

    async def run(conn: UpstreamConn) -> None:
        while True:
            msg = await conn.request(timeout=30)
            if target(msg) != b"/warm":
                await script(conn, msg)
                return
            await conn.respond(body=b"ok:/warm")

    return run


def sent_upstream(up: ScriptedUpstream, path: bytes) -> Message:
    (msg,) = [m for conn in up.conns for m in conn.requests if target(m) == path]
    return msg


# ------------------------------------------------------------------ §5.2 the proxy handler


async def test_queue_full_with_cc1_depth1_rejects_exactly_one_of_three(rig: QpRig) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    qp.state.breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    clients = [await rig.client(qp.main.port) for _ in range(3)]
    tasks = [asyncio.create_task(c.get(b"/r%d" % i)) for i, c in enumerate(clients)]
    done, pending = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    rejected = done.pop().result()
    assert rejected.status == 503
    assert rejected.body == QUEUE_FULL
    assert rejected.header(b"content-type") == b"text/plain; charset=utf-8"
    for _ in range(2):
        _, release = await held.next()
        release.set()
    answers = await asyncio.wait_for(asyncio.gather(*pending), 5)
    assert [m.status for m in answers] == [200, 200]
    assert len(held.requests) == 2
    assert breaker_of(qp).in_flight == 0


@ROUTES
@pytest.mark.parametrize("cc", [0, 1], ids=["no-breaker", "breaker"])
async def test_original_host_restored_and_activator_requests_counted_as_proxied(
    rig: QpRig, fast_calls: list[bytes], cc: int, route: str
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port, container_concurrency=cc)
    await prepare(rig, qp, route)
    qp.reporter.report(qp.loop.time())  # start a clean window
    resp = await rig.get(
        qp.main.port,
        b"/x",
        b"K-Original-Host: original.example\r\nK-Proxy-Request: activator\r\n",
    )
    assert (resp.status, resp.body) == (200, b"ok:/x")
    resp = await rig.get(qp.main.port, b"/y")
    assert resp.status == 200
    first = sent_upstream(up, b"/x")
    assert first.header(b"host") == b"original.example"
    assert first.header(b"k-original-host") is None
    assert first.header(b"k-proxy-request") == b"activator"  # passed through to the app
    qp.reporter.report(qp.loop.time())
    _, stat = await scrape_stat(rig, qp)
    assert stat.request_count == 2.0
    assert stat.proxied_request_count == 1.0
    assert (b"/x" in fast_calls) == (route == "warm")
    assert qp.stats.concurrency == 0


async def test_kubelet_probes_skip_a_full_breaker(rig: QpRig) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = qp.state.breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    _, release_a = await held.next()
    b = asyncio.create_task(rig.get(qp.main.port, b"/b"))
    await eventually(lambda: breaker.in_flight == 2)
    probes = [
        rig.get(qp.main.port, b"/", b"K-Kubelet-Probe: queue\r\nK-Network-Probe: queue\r\n")
        for _ in range(3)
    ]
    answers = await asyncio.wait_for(asyncio.gather(*probes), 5)
    assert [(m.status, m.body) for m in answers] == [(200, b"queue")] * 3
    # A normal request still meets the full queue.
    rejected = await rig.get(qp.main.port, b"/c")
    assert (rejected.status, rejected.body) == (503, QUEUE_FULL)
    release_a.set()
    _, release_b = await held.next()
    release_b.set()
    assert [(await a).status, (await b).status] == [200, 200]
    assert [target(m) for m in held.requests] == [b"/a", b"/b"]


# ------------------------------------------------------------------ §5.6 health answers


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        (
            b"User-Agent: kube-probe/1.30\r\nK-Network-Probe: bogus\r\n",
            400,
            b"unexpected probe header value: bogus\n",
        ),
        (b"User-Agent: kube-probe/1.30\r\n", 400, b"unexpected probe header value: \n"),
        (KUBELET_PROBE, 200, b"queue"),
        (b"K-Kubelet-Probe: yes\r\nK-Network-Probe: queue\r\n", 200, b"queue"),
        (b"User-Agent: Knative-Activator-Probe\r\nK-Network-Probe: queue\r\n", 200, b"queue"),
        (
            b"User-Agent: Knative-Autoscaling-Probe\r\nK-Network-Probe: activator\r\n",
            400,
            b"unexpected probe header value: activator\n",
        ),
        (
            b"K-Network-Probe: probe\r\n",
            400,
            b'a probe request must contain a non-empty "K-Network-Hash" header\n',
        ),
        (b"K-Network-Probe: probe\r\nK-Network-Hash: abc123\r\n", 200, b""),
    ],
    ids=[
        "wrong-value",
        "missing-header",
        "kubelet-ua",
        "kubelet-header",
        "activator",
        "autoscaler",
        "network-no-hash",
        "network-hash",
    ],
)
async def test_probe_answers_never_reach_the_app(
    rig: QpRig, headers: bytes, status: int, body: bytes
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port, container_concurrency=1)
    resp = await rig.get(qp.main.port, b"/healthz", headers)
    assert (resp.status, resp.body) == (status, body)
    if b"K-Network-Hash" in headers:
        assert resp.header(b"k-network-hash") == b"abc123"
    assert up.conns == []
    assert qp.stats.concurrency == 0


async def test_health_probe_answers_503_when_the_container_is_not_ready(rig: QpRig) -> None:
    up = await rig.upstream()
    spec = parse_probe(
        json.dumps(
            {
                "tcpSocket": {"host": HOST, "port": closed_port()},
                "periodSeconds": 1,
                "timeoutSeconds": 1,
            }
        )
    )
    qp = await rig.start(up.port, readiness_probe=spec)
    resp = await rig.get(qp.main.port, b"/", KUBELET_PROBE)
    assert (resp.status, resp.body) == (503, b"")


@ROUTES
async def test_draining_fails_probes_with_shutting_down_but_serves_traffic(
    rig: QpRig, fast_calls: list[bytes], route: str
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port, drain_quiet_seconds=0.3)
    await prepare(rig, qp, route)
    drain = asyncio.create_task(qp.drainer.drain())
    await eventually(lambda: qp.drainer.draining)
    for headers in (
        KUBELET_PROBE,
        b"User-Agent: Knative-Activator-Probe\r\nK-Network-Probe: queue\r\n",
        b"K-Network-Probe: probe\r\nK-Network-Hash: h\r\n",
    ):
        resp = await rig.get(qp.main.port, b"/", headers)
        assert (resp.status, resp.body) == (503, SHUTTING_DOWN)
    loop = asyncio.get_running_loop()
    resp = await rig.get(qp.main.port, b"/during-drain")
    served = loop.time()
    assert (resp.status, resp.body) == (200, b"ok:/during-drain")
    assert (b"/during-drain" in fast_calls) == (route == "warm")
    # The request restarted the quiet period.
    await asyncio.wait_for(drain, 3)
    assert loop.time() - served >= 0.25
    assert qp.drainer.drained


async def test_network_probe_value_queue_without_probe_ua_is_proxied_to_the_app(
    rig: QpRig,
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    resp = await rig.get(qp.main.port, b"/app-health", b"K-Network-Probe: queue\r\n")
    assert (resp.status, resp.body) == (200, b"ok:/app-health")
    assert up.conns[0].requests[0].header(b"k-network-probe") == b"queue"
    # ...but it counts as a probe for the request metrics.
    assert lines_of(await scrape_metrics(rig, qp), "revision_request_count") == []


# ------------------------------------------------------------------ §5.4 autoscaler stats


@pytest.mark.parametrize(
    "accept",
    [b"", b"Accept: text/plain\r\n", b"Accept: application/protobuf\r\n",
     b"Accept: text/plain, application/protobuf;q=0.9\r\n"],
    ids=["none", "other", "exact", "list"],
)  # fmt: skip
async def test_stats_scrape_before_first_report_holds_only_pod_name(
    rig: QpRig, accept: bytes
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    resp, stat = await scrape_stat(rig, qp, accept)
    assert resp.status == 200
    assert resp.header(b"content-type") == b"application/protobuf"
    assert resp.body == b"\n\x03pod" == encode_stat(Stat(pod_name="pod"))
    assert stat == Stat(pod_name="pod")


async def test_stats_port_answers_404_off_metrics(rig: QpRig) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    resp = await rig.get(qp.stats_server.port, b"/other")
    assert (resp.status, resp.body) == (404, b"404 page not found\n")


def test_stats_reporter_two_half_second_requests_in_one_window_average_one() -> None:
    stats = RequestStats(10.0)
    reporter = StatsReporter(stats, "pod", clock_start=10.0)
    stats.req_in(10.0, proxied=False)
    stats.req_in(10.25, proxied=True)
    stats.req_out(10.5, proxied=False)
    stats.req_out(10.75, proxied=True)
    reporter.report(11.0)
    assert decode_stat(reporter.body) == Stat(
        pod_name="pod",
        average_concurrent_requests=1.0,
        average_proxied_concurrent_requests=0.5,
        request_count=2.0,
        proxied_request_count=1.0,
        process_uptime=1.0,
    )
    reporter.report(12.0)  # an idle window: only the uptime moves on
    assert decode_stat(reporter.body) == Stat(pod_name="pod", process_uptime=2.0)


async def test_requests_queued_in_the_breaker_count_as_concurrency(rig: QpRig) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    qp.reporter.report(qp.loop.time())
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    _, release_a = await held.next()
    b = asyncio.create_task(rig.get(qp.main.port, b"/b"))
    await eventually(lambda: breaker.in_flight == 2)
    assert qp.stats.concurrency == 2
    qp.reporter.report(qp.loop.time())
    _, arrivals = await scrape_stat(rig, qp)
    assert arrivals.request_count == 2.0
    # A window entirely inside "one executing, one queued" averages exactly 2.
    await asyncio.sleep(0.05)
    qp.reporter.report(qp.loop.time())
    _, held_window = await scrape_stat(rig, qp)
    assert held_window.average_concurrent_requests == 2.0
    assert held_window.request_count == 0.0
    release_a.set()
    _, release_b = await held.next()
    release_b.set()
    await asyncio.wait_for(asyncio.gather(a, b), 5)
    assert qp.stats.concurrency == 0


async def test_queue_full_rejections_count_as_requests_and_probes_do_not(rig: QpRig) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = qp.state.breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    qp.reporter.report(qp.loop.time())
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    _, release_a = await held.next()
    b = asyncio.create_task(rig.get(qp.main.port, b"/b"))
    await eventually(lambda: breaker.in_flight == 2)
    assert (await rig.get(qp.main.port, b"/c")).status == 503
    await rig.get(qp.main.port, b"/", KUBELET_PROBE)
    await rig.get(qp.main.port, b"/", b"K-Network-Probe: probe\r\nK-Network-Hash: h\r\n")
    qp.reporter.report(qp.loop.time())
    _, stat = await scrape_stat(rig, qp)
    assert stat.request_count == 3.0
    release_a.set()
    _, release_b = await held.next()
    release_b.set()
    await asyncio.wait_for(asyncio.gather(a, b), 5)


# ------------------------------------------------------------------ §1.7 timeouts


@ROUTES
async def test_silent_upstream_gets_504_request_timeout_and_is_disconnected(
    rig: QpRig, fast_calls: list[bytes], route: str
) -> None:
    upstream_closed = asyncio.Event()

    async def silent(conn: UpstreamConn, msg: Message) -> None:
        await conn.wait_eof(timeout=30)
        upstream_closed.set()

    up = await rig.upstream(after_warm_up(silent))
    qp = await rig.start(up.port, container_concurrency=1)
    await prepare(rig, qp, route)
    qp.state.deadline = Deadline(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await rig.get(qp.main.port, b"/slow")
    elapsed = loop.time() - started
    assert (resp.status, resp.body) == (504, REQUEST_TIMEOUT)
    assert 0.3 <= elapsed < 2.0
    await asyncio.wait_for(upstream_closed.wait(), 3)
    await eventually(lambda: breaker_of(qp).in_flight == 0 and qp.stats.concurrency == 0)
    assert (b"/slow" in fast_calls) == (route == "warm")
    # The slot and the pool are usable again.
    qp.state.deadline = Deadline(300.0)
    assert (await rig.get(qp.main.port, b"/warm")).status == 200


async def test_response_start_timeout_gives_504_before_the_head(rig: QpRig) -> None:
    async def silent(conn: UpstreamConn) -> None:
        await conn.request(timeout=30)
        await conn.wait_eof(timeout=30)

    up = await rig.upstream(silent)
    qp = await rig.start(up.port)
    qp.state.deadline = Deadline(300.0, response_start=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await rig.get(qp.main.port, b"/slow")
    assert (resp.status, resp.body) == (504, REQUEST_TIMEOUT)
    assert 0.3 <= loop.time() - started < 2.0


async def test_response_start_timeout_no_longer_applies_once_the_head_is_sent(
    rig: QpRig,
) -> None:
    async def slow_body(conn: UpstreamConn) -> None:
        await conn.request(timeout=30)
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nfirst")
        await asyncio.sleep(0.4)  # the scenario: the body outlasts the response-start limit
        await conn.send(b"-end")

    up = await rig.upstream(slow_body)
    qp = await rig.start(up.port)
    qp.state.deadline = Deadline(300.0, response_start=0.2)
    resp = await rig.get(qp.main.port, b"/")
    assert (resp.status, resp.body) == (200, b"first-end")


@ROUTES
async def test_idle_timeout_after_the_head_cuts_the_connection_without_504(
    rig: QpRig, fast_calls: list[bytes], route: str
) -> None:
    async def stalls(conn: UpstreamConn, msg: Message) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await conn.wait_eof(timeout=30)

    up = await rig.upstream(after_warm_up(stalls))
    qp = await rig.start(up.port, container_concurrency=1)
    await prepare(rig, qp, route)
    qp.state.deadline = Deadline(300.0, idle=0.3)
    client = await rig.client(qp.main.port)
    await client.send(b"GET /stall HTTP/1.1\r\nHost: test\r\n\r\n")
    head = await client.io.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    rest = await client.eof(timeout=3)
    # Every byte received is forwarded, then the connection closes: no last chunk, no 504.
    assert rest == b"5\r\nhello\r\n"
    assert b"request timeout" not in client.io.seen
    await eventually(lambda: breaker_of(qp).in_flight == 0 and qp.stats.concurrency == 0)
    assert (b"/stall" in fast_calls) == (route == "warm")


async def test_request_queued_in_the_breaker_when_timeout_fires_gets_504_and_frees_slot(
    rig: QpRig,
) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))  # revision timeout 300 s
    _, release_a = await held.next()
    qp.state.deadline = Deadline(0.3)  # only requests arriving from now on get the short timeout
    loop = asyncio.get_running_loop()
    started = loop.time()
    b = await rig.get(qp.main.port, b"/b")  # queued behind /a until its timeout fires
    assert (b.status, b.body) == (504, REQUEST_TIMEOUT)
    assert 0.3 <= loop.time() - started < 2.0
    await eventually(lambda: breaker.in_flight == 1 and qp.stats.concurrency == 1)
    qp.state.deadline = Deadline(300.0)
    release_a.set()
    assert (await a).body == b"ok:/a"
    # The slot really is free: the next request is served, and /b never reached the app.
    c = asyncio.create_task(rig.get(qp.main.port, b"/c"))
    _, release_c = await held.next()
    release_c.set()
    assert (await c).body == b"ok:/c"
    assert [target(m) for m in held.requests] == [b"/a", b"/c"]
    assert breaker.in_flight == 0


async def test_request_timing_out_in_the_app_frees_its_slot_for_the_next(rig: QpRig) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    qp.state.deadline = Deadline(0.3)
    a = await rig.get(qp.main.port, b"/a")
    assert (a.status, a.body) == (504, REQUEST_TIMEOUT)
    await held.next()  # /a reached the app, which never answered
    await eventually(lambda: breaker.in_flight == 0)
    qp.state.deadline = Deadline(300.0)
    b = asyncio.create_task(rig.get(qp.main.port, b"/b"))
    _, release_b = await held.next()
    release_b.set()
    assert (await b).body == b"ok:/b"


# ------------------------------------------------------------------ D1, D4, D9 upstream failures


async def test_refused_upstream_gets_502_naming_the_cause_and_connection_stays_usable(
    rig: QpRig,
) -> None:
    port = closed_port()
    qp = await rig.start(port, container_concurrency=1)
    client = await rig.client(qp.main.port)
    for _ in range(2):
        resp = await client.get(b"/")
        assert resp.status == 502
        assert resp.body == b"dial tcp 127.0.0.1:%d: connect: connection refused\n" % port
    assert breaker_of(qp).in_flight == 0
    assert qp.stats.concurrency == 0


async def test_upstream_reset_before_answering_gets_502_and_frees_the_slot(rig: QpRig) -> None:
    async def crash(conn: UpstreamConn) -> None:
        await conn.request(timeout=30)
        conn.reset()

    up = await rig.upstream(crash)
    qp = await rig.start(up.port, container_concurrency=1)
    resp = await rig.get(qp.main.port, b"/post-crash")
    assert resp.status == 502
    assert resp.body.endswith(b"\n") and len(resp.body) > 1  # a message, not Go's empty 502
    assert breaker_of(qp).in_flight == 0


async def test_truncated_upstream_body_is_forwarded_then_the_client_is_cut(rig: QpRig) -> None:
    async def short(conn: UpstreamConn) -> None:
        await conn.request(timeout=30)
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly 15 bytes..")
        conn.close()

    up = await rig.upstream(short)
    qp = await rig.start(up.port, container_concurrency=1)
    client = await rig.client(qp.main.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    head = await client.io.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 100\r\n" in head
    assert await client.eof(timeout=3) == b"only 15 bytes.."
    await eventually(lambda: breaker_of(qp).in_flight == 0 and qp.stats.concurrency == 0)


# ------------------------------------------------------------------ C3 client disconnect


@pytest.mark.parametrize("how", ["reset", "half-close"])
async def test_client_leaving_while_queued_frees_its_slot_at_once(rig: QpRig, how: str) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    _, release_a = await held.next()
    quitter = await rig.client(qp.main.port)
    await quitter.send(b"GET /b HTTP/1.1\r\nHost: test\r\n\r\n")
    await eventually(lambda: breaker.in_flight == 2)
    if how == "reset":
        quitter.reset()
    else:
        quitter.half_close()
    await eventually(lambda: breaker.in_flight == 1 and qp.stats.concurrency == 1)
    release_a.set()
    assert (await a).status == 200
    c = asyncio.create_task(rig.get(qp.main.port, b"/c"))
    _, release_c = await held.next()
    release_c.set()
    assert (await c).status == 200
    assert [target(m) for m in held.requests] == [b"/a", b"/c"]


@ROUTES
async def test_client_leaving_while_the_app_works_closes_upstream_and_frees_everything(
    rig: QpRig, fast_calls: list[bytes], route: str
) -> None:
    upstream_closed = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(conn: UpstreamConn, msg: Message) -> None:
        arrived.set()
        await conn.wait_eof(timeout=30)
        upstream_closed.set()

    up = await rig.upstream(after_warm_up(slow))
    qp = await rig.start(up.port, container_concurrency=1)
    await prepare(rig, qp, route)
    client = await rig.client(qp.main.port)
    await client.send(b"GET /gone HTTP/1.1\r\nHost: test\r\n\r\n")
    await asyncio.wait_for(arrived.wait(), 5)
    client.reset()
    await asyncio.wait_for(upstream_closed.wait(), 3)
    await eventually(lambda: breaker_of(qp).in_flight == 0 and qp.stats.concurrency == 0)
    assert (b"/gone" in fast_calls) == (route == "warm")


# ------------------------------------------------------------------ §1.15 request metrics


@ROUTES
async def test_request_metrics_exclude_probes(
    rig: QpRig, fast_calls: list[bytes], route: str
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    await prepare(rig, qp, route)
    assert (await rig.get(qp.main.port, b"/")).status == 200
    await rig.get(qp.main.port, b"/", KUBELET_PROBE)
    await rig.get(qp.main.port, b"/", b"K-Network-Probe: probe\r\nK-Network-Hash: h\r\n")
    await rig.get(qp.main.port, b"/", b"K-Network-Probe: queue\r\n")  # proxied, still a probe
    n = 2 if route == "warm" else 1
    text = await scrape_metrics(rig, qp)
    assert lines_of(text, "revision_request_count") == [request_count_line(200, "DISABLED", n)]
    assert lines_of(text, "revision_app_request_count") == [app_count_line(200, n)]
    assert lines_of(text, "revision_queue_depth") == []  # no breaker (CC=0)
    assert fast_calls == ([b"/"] if route == "warm" else [])


@pytest.mark.parametrize(
    ("headers", "tag"),
    [
        (b"", "DISABLED"),
        (b"Knative-Serving-Default-Route: true\r\n", "DEFAULT"),
        (b"Knative-Serving-Tag: blue\r\n", "blue"),
        (b"Knative-Serving-Tag: blue\r\nKnative-Serving-Default-Route: true\r\n", "UNDEFINED"),
        (b"Knative-Serving-Tag: blue\r\nKnative-Serving-Default-Route: false\r\n", "blue"),
    ],
)
async def test_request_metrics_route_tag_label(rig: QpRig, headers: bytes, tag: str) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    assert (await rig.get(qp.main.port, b"/", headers)).status == 200
    text = await scrape_metrics(rig, qp)
    assert lines_of(text, "revision_request_count") == [request_count_line(200, tag, 1)]
    # The tag headers are passed through to the app.
    if headers:
        assert up.conns[0].requests[0].header(b"knative-serving-tag") == (
            b"blue" if b"Tag" in headers else None
        )


async def test_request_metrics_count_503_and_504_made_further_in(rig: QpRig) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = qp.state.breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    qp.state.deadline = Deadline(0.5)
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    await held.next()
    b = asyncio.create_task(rig.get(qp.main.port, b"/b"))
    await eventually(lambda: breaker.in_flight == 2)
    # /a's slot is not handed on when its deadline frees it: /b times out in the queue
    # however the two deadlines fall on a loaded machine (it once reached the app first).
    breaker.update_concurrency(0)
    assert (await rig.get(qp.main.port, b"/c")).status == 503
    assert [m.status for m in await asyncio.wait_for(asyncio.gather(a, b), 5)] == [504, 504]
    await eventually(lambda: breaker.in_flight == 0)
    text = await scrape_metrics(rig, qp)
    assert sorted(lines_of(text, "revision_request_count")) == sorted(
        [request_count_line(503, "DISABLED", 1), request_count_line(504, "DISABLED", 2)]
    )
    # Only /a got past the breaker to the app.
    assert [line.rsplit(" ", 1)[1] for line in lines_of(text, "revision_app_request_count")] == [
        "1"
    ]


def metric_value(text: str, name: str) -> float:
    """The one sample of ``name`` (a series without labels to tell apart)."""
    (line,) = lines_of(text, name)
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("queued", [b"GET", b"POST"])  # the fast path, and the task path
async def test_app_latency_of_a_queued_request_starts_when_it_leaves_the_queue(
    rig: QpRig, queued: bytes
) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    _, release_a = await held.next()
    client = await rig.client(qp.main.port)
    body = b"Content-Length: 2\r\n\r\nhi" if queued == b"POST" else b"\r\n"
    await client.send(queued + b" /b HTTP/1.1\r\nHost: test\r\n" + body)
    await eventually(lambda: breaker.in_flight == 2)
    await asyncio.sleep(0.3)  # /b waits this long in the breaker's queue
    release_a.set()
    _, release_b = await held.next()
    release_b.set()
    assert (await a).status == 200
    assert (await client.response()).status == 200
    text = await scrape_metrics(rig, qp)
    waited = metric_value(text, "revision_request_latencies_sum") - metric_value(
        text, "revision_app_request_latencies_sum"
    )
    # /a's two latencies are one interval; /b's request latency holds its queueing, its app
    # latency does not (whole milliseconds, each truncated).
    assert waited >= 298


async def test_queue_depth_gauge_is_breaker_in_flight_on_entry_to_the_app(rig: QpRig) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    _, release_a = await held.next()
    assert lines_of(await scrape_metrics(rig, qp), "revision_queue_depth") == [queue_depth_line(1)]
    b = asyncio.create_task(rig.get(qp.main.port, b"/b"))
    await eventually(lambda: breaker.in_flight == 2)
    c = asyncio.create_task(rig.get(qp.main.port, b"/c"))
    await eventually(lambda: breaker.in_flight == 3)
    release_a.set()
    _, release_b = await held.next()  # /b entered the app with /b and /c admitted
    assert lines_of(await scrape_metrics(rig, qp), "revision_queue_depth") == [queue_depth_line(2)]
    release_b.set()
    _, release_c = await held.next()
    release_c.set()
    await asyncio.wait_for(asyncio.gather(a, b, c), 5)
    assert lines_of(await scrape_metrics(rig, qp), "revision_queue_depth") == [queue_depth_line(1)]


# ------------------------------------------------------------------ §1.16 headers


@ROUTES
async def test_internal_headers_never_reach_the_app_and_xff_is_appended(
    rig: QpRig, fast_calls: list[bytes], route: str
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    await prepare(rig, qp, route)
    resp = await rig.get(
        qp.main.port,
        b"/h",
        b"Knative-Serving-Revision: other-rev\r\nKnative-Serving-Namespace: other-ns\r\n"
        b"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: h.example\r\nX-Custom: kept\r\n",
    )
    assert resp.status == 200
    msg = sent_upstream(up, b"/h")
    names = msg.names()
    assert b"knative-serving-revision" not in names
    assert b"knative-serving-namespace" not in names
    assert msg.header_all(b"x-forwarded-for") == [b"1.2.3.4, 127.0.0.1"]
    # The shim runs before the peer is appended.
    assert msg.header_all(b"forwarded") == [b"for=1.2.3.4;host=h.example;proto=https"]
    assert msg.header(b"x-custom") == b"kept"
    assert msg.header(b"host") == b"test"
    assert msg.header(b"user-agent") is None  # the client sent none; none is added
    assert fast_calls == ([b"/h"] if route == "warm" else [])


async def test_existing_forwarded_header_is_left_alone_and_user_agent_kept(rig: QpRig) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    resp = await rig.get(
        qp.main.port,
        b"/h",
        b"Forwarded: for=9.9.9.9\r\nX-Forwarded-For: 1.2.3.4\r\nUser-Agent: curl/8.0\r\n",
    )
    assert resp.status == 200
    msg = up.conns[0].requests[0]
    assert msg.header_all(b"forwarded") == [b"for=9.9.9.9"]
    assert msg.header(b"user-agent") == b"curl/8.0"


async def test_no_forwarded_header_without_x_forwarded_headers(rig: QpRig) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    assert (await rig.get(qp.main.port, b"/h")).status == 200
    msg = up.conns[0].requests[0]
    assert msg.header(b"forwarded") is None
    assert msg.header_all(b"x-forwarded-for") == [b"127.0.0.1"]


# ------------------------------------------------------------------ admin: /wait-for-drain


async def test_admin_port_routes_only_wait_for_drain(rig: QpRig) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    resp = await rig.get(qp.admin.port, b"/metrics")
    assert (resp.status, resp.body) == (404, b"404 page not found\n")
    assert not qp.drainer.draining


async def test_wait_for_drain_returns_after_the_quiet_period_once_terminating(
    rig: QpRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qp_main, "PRESTOP_RESET_AFTER", 0.2)
    up = await rig.upstream()
    qp = await rig.start(up.port, drain_quiet_seconds=0.4)
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(rig.get(qp.admin.port, b"/wait-for-drain"))
    await eventually(lambda: qp.drainer.draining)
    qp.terminate()  # the kubelet's SIGTERM follows the preStop hook
    probe = await rig.get(qp.main.port, b"/", KUBELET_PROBE)
    assert (probe.status, probe.body) == (503, SHUTTING_DOWN)
    served = await rig.get(qp.main.port, b"/late")  # served, and restarts the quiet period
    last_request = loop.time()
    assert (served.status, served.body) == (200, b"ok:/late")
    resp = await asyncio.wait_for(waiter, 5)
    assert (resp.status, resp.body) == (200, b"")
    assert loop.time() - last_request >= 0.35
    # Past the reset window: terminating, so the drain is not undone.
    assert qp.drainer.drained
    probe = await rig.get(qp.main.port, b"/", KUBELET_PROBE)
    assert (probe.status, probe.body) == (503, SHUTTING_DOWN)


async def test_wait_for_drain_without_sigterm_resets_and_probes_recover(
    rig: QpRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qp_main, "PRESTOP_RESET_AFTER", 0.2)
    up = await rig.upstream()
    qp = await rig.start(up.port, drain_quiet_seconds=30.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await rig.get(qp.admin.port, b"/wait-for-drain")
    assert (resp.status, resp.body) == (200, b"")
    assert 0.2 <= loop.time() - started < 2.0
    assert not qp.drainer.draining
    probe = await rig.get(qp.main.port, b"/", KUBELET_PROBE)
    assert (probe.status, probe.body) == (200, b"queue")


async def test_wait_for_drain_without_sigterm_resets_even_if_the_drain_finished_first(
    rig: QpRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Knative's reset goroutine is not stopped by Drain() returning: a liveness restart
    # with a quiet period shorter than the reset window must not leave probes failing.
    monkeypatch.setattr(qp_main, "PRESTOP_RESET_AFTER", 0.3)
    up = await rig.upstream()
    qp = await rig.start(up.port, drain_quiet_seconds=0.05)
    resp = await rig.get(qp.admin.port, b"/wait-for-drain")
    assert resp.status == 200
    assert qp.drainer.drained
    await eventually(lambda: not qp.drainer.draining, timeout=2.0)
    probe = await rig.get(qp.main.port, b"/", KUBELET_PROBE)
    assert (probe.status, probe.body) == (200, b"queue")


# ------------------------------------------------------------------ §1.22 request log


_LATENCY = re.compile(r"^[0-9.e+-]+s$")


async def test_request_log_writes_knatives_default_json_line(
    rig: QpRig, capsys: pytest.CaptureFixture[str]
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port, enable_request_log=True)
    resp = await rig.get(
        qp.main.port, b"/path?x=1", b"User-Agent: curl/8.0\r\nReferer: http://r.example/\r\n"
    )
    assert (resp.status, resp.body) == (200, b"ok:/path?x=1")
    out = capsys.readouterr().out
    assert out.endswith("\n")
    (line,) = out.splitlines()
    record = json.loads(line)
    latency = record["httpRequest"].pop("latency")
    assert _LATENCY.match(latency), latency
    # Go's RemoteAddr: the client's ip:port.
    assert re.fullmatch(r"127\.0\.0\.1:[0-9]+", record["httpRequest"].pop("remoteIp"))
    assert record == {
        "httpRequest": {
            "requestMethod": "GET",
            "requestUrl": "/path?x=1",
            "requestSize": "0",
            "status": 200,
            "responseSize": "12",
            "userAgent": "curl/8.0",
            "serverIp": "10.0.0.1",
            "referer": "http://r.example/",
            "protocol": "HTTP/1.1",
        },
        "traceId": "[]",
    }


PROBE_REQUESTS = (
    KUBELET_PROBE,
    b"K-Network-Probe: probe\r\nK-Network-Hash: h\r\n",
    b"K-Network-Probe: queue\r\n",
)


@pytest.mark.parametrize("log_probes", [False, True], ids=["probes-off", "probes-on"])
async def test_request_log_skips_probes_unless_probe_logging_is_on(
    rig: QpRig, capsys: pytest.CaptureFixture[str], log_probes: bool
) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port, enable_request_log=True, enable_probe_request_log=log_probes)
    for headers in PROBE_REQUESTS:
        await rig.get(qp.main.port, b"/probe", headers)
    await rig.get(qp.main.port, b"/real")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = [(r["httpRequest"]["requestUrl"], r["httpRequest"]["status"]) for r in lines]
    if log_probes:
        assert got == [("/probe", 200), ("/probe", 200), ("/probe", 200), ("/real", 200)]
    else:
        assert got == [("/real", 200)]


async def test_request_log_off_by_default(rig: QpRig, capsys: pytest.CaptureFixture[str]) -> None:
    up = await rig.upstream()
    qp = await rig.start(up.port)
    await rig.get(qp.main.port, b"/real")
    assert capsys.readouterr().out == ""
    assert qp.state.request_log is None


@pytest.mark.parametrize("cc", [0, 1], ids=["no-breaker", "breaker"])
async def test_finished_requests_leave_no_reference_cycles(rig: QpRig, cc: int) -> None:
    # Each request's objects must be freed by reference counting when it ends: a cycle per
    # request (exchange -> handler state -> timer -> exchange) would leave every request to
    # the cyclic collector, a measurable share of the hot path (and of memory under load).
    import gc

    up = await rig.upstream()
    qp = await rig.start(up.port, container_concurrency=cc)
    clients = [await rig.client(qp.main.port) for _ in range(3)]
    await asyncio.gather(*(c.get(b"/warm") for c in clients))
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            answers = await asyncio.gather(*(c.get(b"/r") for c in clients))
            assert [m.status for m in answers] == [200, 200, 200]
        gc.collect()
        leaked = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
    assert not {"Exchange", "Forwarding", "_Request"} & set(leaked), leaked
