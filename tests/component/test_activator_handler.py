"""The activator request path in-process: scripted pods, a recording scaler (§2, §5.12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from activator.app import Activator, Settings
from activator.model import Revision, Route, RoutingConfig, TrafficTarget
from activator.source import PushSource
from activator.stats import StatBatch
from proxy.http1 import Exchange
from proxy.server import HttpServer

pytestmark = pytest.mark.timeout(20)

NS = "default"
#: ``--trust-routing-headers-from`` for tests whose client plays Knative's ingress.
LOOPBACK = "127.0.0.0/8"
HOST = "hello.default.localhost"


#: Every pod a test started, shut down after it (``_stop_pods``): a listening socket left
#: open is a ResourceWarning, and warnings fail tests.
_STARTED: list[Pod] = []


@pytest.fixture(autouse=True)
async def _stop_pods() -> AsyncIterator[None]:
    yield
    while _STARTED:
        await _STARTED.pop().server.shutdown(grace=0.1)


class Pod:
    """A scripted queue-proxy: answers the activator probe, records and serves requests."""

    def __init__(self, behaviour: Callable[[Exchange], Awaitable[None]] | None = None) -> None:
        self.server = HttpServer(self._handle)
        self.seen: list[dict[str, str]] = []
        self.behaviour = behaviour
        self.dest = ""

    async def start(self) -> Pod:
        await self.server.start("127.0.0.1", 0)
        self.dest = f"127.0.0.1:{self.server.port}"
        _STARTED.append(self)
        return self

    async def _handle(self, ex: Exchange) -> None:
        if ex.header(b"k-network-probe") == b"queue":
            ex.send(200, b"queue")
            return
        self.seen.append({k.decode().lower(): v.decode() for k, v in ex.headers})
        if self.behaviour is not None:
            await self.behaviour(ex)
        else:
            ex.send(200, self.dest.encode())


class RecordingScaler:
    def __init__(self) -> None:
        self.pokes: list[StatBatch] = []
        self.reports: list[StatBatch] = []

    def poke(self, batch: StatBatch) -> None:
        self.pokes.append(batch)

    def report(self, batch: StatBatch) -> None:
        self.reports.append(batch)


def config(
    *revisions: Revision,
    traffic: tuple[TrafficTarget, ...] | None = None,
    **kw: Any,
) -> RoutingConfig:
    if traffic is None:
        traffic = (TrafficTarget(revisions[0].name, 100),)
    return RoutingConfig(routes=(Route("hello", NS, traffic),), revisions=tuple(revisions), **kw)


def revision(name: str = "hello-1", pods: list[Pod] | None = None, **kw: Any) -> Revision:
    return Revision(name, NS, endpoints=tuple(p.dest for p in pods or []), **kw)


class Harness:
    def __init__(self, activator: Activator, source: PushSource, scaler: RecordingScaler) -> None:
        self.activator = activator
        self.source = source
        self.scaler = scaler
        self.url = f"http://127.0.0.1:{activator.port}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def get(self, path: str = "/", **headers: str) -> tuple[int, bytes, dict[str, str]]:
        hdrs = {"Host": HOST}
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        async with self.session.get(self.url + path, headers=hdrs) as resp:
            return resp.status, await resp.read(), dict(resp.headers)

    async def push(self, cfg: RoutingConfig) -> None:
        self.source.update(cfg)
        await self.activator.wait_for(lambda: self.activator.config == cfg)

    async def healthy(self, name: str, n: int) -> None:
        def ready() -> bool:
            t = self.activator.handler.snapshot.throttlers.get((NS, name))
            return t is not None and len(t.trackers) == n

        await self.activator.wait_for(ready)


@pytest.fixture
async def harness() -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def make(cfg: RoutingConfig, **kw: Any) -> Harness:
        settings = Settings(
            config=Path("unused.yaml"),
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            probe_interval=0.02,
            report_interval=kw.pop("report_interval", 3600.0),
            **kw,
        )
        source = PushSource(cfg)
        scaler = RecordingScaler()
        act = Activator(settings, source, scaler=scaler)
        await act.start()
        h = Harness(act, source, scaler)
        made.append(h)
        await act.wait_for(lambda: act.config == cfg)
        for rev in cfg.revisions:
            if rev.endpoints:
                await h.healthy(rev.name, len(rev.endpoints))
        return h

    yield make
    for h in made:
        await h.session.close()
        await h.activator.close()


# --------------------------------------------------------------------------- probes


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        ({"User-Agent": "kube-probe/1.27"}, 200, b""),
        ({"K-Kubelet-Probe": "activator"}, 200, b""),
        ({"K-Network-Probe": "probe"}, 400,
         b'a probe request must contain a non-empty "K-Network-Hash" header\n'),
        ({"K-Network-Probe": "activator"}, 200, b"activator"),
        ({"K-Network-Probe": "queue"}, 400, b'unexpected probe header value: "queue"\n'),
        ({"K-Network-Probe": "<a&'\">"}, 400,
         b'unexpected probe header value: "&lt;a&amp;&#39;&#34;&gt;"\n'),
    ],
)  # fmt: skip
async def test_probes_are_answered_before_routing(
    harness: Callable[..., Awaitable[Harness]], headers: dict[str, str], status: int, body: bytes
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(pods=[pod])))
    got_status, got_body, _ = await h.get(Host="unknown.example", **headers)
    assert (got_status, got_body) == (status, body)
    assert pod.seen == []


async def test_network_probe_echoes_the_hash(harness: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness(config(revision()))
    status, body, hdrs = await h.get(**{"K-Network-Probe": "probe", "K-Network-Hash": "abc"})
    assert (status, body, hdrs.get("K-Network-Hash")) == (200, b"", "abc")


async def test_after_sigterm_kubelet_probe_fails_but_traffic_flows(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(pods=[pod])))
    h.activator.terminate()
    assert (await h.get(User_Agent="kube-probe/1.27"))[:2] == (
        500,
        b"received SIGTERM from kubelet\n",
    )
    assert (await h.get(K_Network_Probe="activator"))[:2] == (200, b"activator")
    assert (await h.get())[0] == 200


# -------------------------------------------------------------------------- routing


async def test_unknown_revision_header_is_404_with_no_poke_and_no_metrics(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(pods=[pod])), trust_routing_headers_from=LOOPBACK)
    status, body, _ = await h.get(
        **{"Knative-Serving-Revision": "fooname", "Knative-Serving-Namespace": NS}
    )
    assert status == 404
    assert (
        body == b'Error getting active endpoint: revision.serving.knative.dev "fooname" not found\n'
    )
    assert h.scaler.pokes == [] and pod.seen == []
    assert b"activator_request_count{" not in h.activator.metrics.render()
    assert h.activator.reporter.report(0.0) == []


async def test_unknown_host_is_404(harness: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness(config(revision()))
    status, body, _ = await h.get(Host="nobody.example")
    assert status == 404 and body.startswith(b"Error getting active endpoint")
    assert h.scaler.pokes == []


async def test_revision_headers_route_even_without_a_route_host(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    p1, p2 = await Pod().start(), await Pod().start()
    h = await harness(
        config(revision("hello-1", [p1]), revision("hello-2", [p2])),
        trust_routing_headers_from=LOOPBACK,
    )
    status, body, _ = await h.get(
        Host="whatever.example",
        **{"Knative-Serving-Revision": "hello-2", "Knative-Serving-Namespace": NS},
    )
    assert (status, body) == (200, p2.dest.encode())
    assert "knative-serving-revision" not in p2.seen[0]
    assert "knative-serving-namespace" not in p2.seen[0]


async def test_cluster_local_revision_host_is_understood(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(pods=[pod])))
    status, _, _ = await h.get(Host="hello-1.default.svc.cluster.local:80")
    assert status == 200


async def test_upstream_request_carries_the_activator_headers(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(pods=[pod])))
    await h.get(**{"K-Network-Hash": "x"})
    seen = pod.seen[0]
    assert seen["k-proxy-request"] == "activator"
    assert seen["k-original-host"] == HOST
    assert seen["host"] == pod.dest
    assert "k-network-hash" not in seen
    await h.get(**{"K-Original-Host": "first.example"})
    assert pod.seen[1]["k-original-host"] == "first.example"


async def test_tag_header_and_tag_host_pick_the_tagged_revision(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    p1, p2 = await Pod().start(), await Pod().start()
    traffic = (TrafficTarget("hello-1", 100), TrafficTarget("hello-2", 0, tag="canary"))
    cfg = config(
        revision("hello-1", [p1]),
        revision("hello-2", [p2]),
        traffic=traffic,
        tag_header_routing=True,
    )
    h = await harness(cfg)
    assert (await h.get(Knative_Serving_Tag="canary"))[1] == p2.dest.encode()
    assert (await h.get(Host="canary-hello.default.localhost"))[1] == p2.dest.encode()
    assert p2.seen[1]["knative-serving-tag"] == "canary"
    # An unknown tag falls through to the default split and is marked as such.
    assert (await h.get(Knative_Serving_Tag="nope"))[1] == p1.dest.encode()
    assert p1.seen[0]["knative-serving-default-route"] == "true"
    for _ in range(20):
        assert (await h.get())[1] == p1.dest.encode()


# -------------------------------------------------------------------- failure modes


async def test_upstream_failure_is_502_one_line_and_not_retried(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    async def reset(ex: Exchange) -> None:
        ex.abort()

    bad, good = await Pod(reset).start(), await Pod().start()
    # CC 1 and first-available: the sorted-first pod is tried first, so pick ports so that
    # the failing pod sorts first.
    pods = sorted([bad, good], key=lambda p: p.dest)
    if pods[0] is not bad:
        bad.behaviour, good.behaviour = None, reset
        bad, good = good, bad
    h = await harness(config(revision(pods=[bad, good], container_concurrency=1)))
    status, body, _ = await h.get()
    assert status == 502
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and len(body) > 1
    assert len(bad.seen) == 1 and good.seen == []


async def test_request_queued_past_the_revision_timeout_gets_504(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await harness(config(revision(timeout_seconds=1)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, body, _ = await h.get()
    assert (status, body) == (504, b"activator request timeout")
    assert 0.9 < loop.time() - start < 3
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    assert throttler.waiting == 0


async def test_response_start_timeout_gives_504_and_idle_timeout_cuts_the_body(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    async def slow_head(ex: Exchange) -> None:
        await asyncio.sleep(5)

    async def stalls(ex: Exchange) -> None:
        ex.start_response(200, [], None)
        ex.write(b"partial")
        await asyncio.sleep(5)

    p1, p2 = await Pod(slow_head).start(), await Pod(stalls).start()
    h = await harness(
        config(
            revision("hello-1", [p1], response_start_timeout_seconds=1),
            revision("hello-2", [p2], idle_timeout_seconds=1),
        ),
        trust_routing_headers_from=LOOPBACK,
    )
    status, body, _ = await h.get()
    assert (status, body) == (504, b"activator request timeout")
    with pytest.raises(aiohttp.ClientPayloadError):
        await h.get(**{"Knative-Serving-Revision": "hello-2", "Knative-Serving-Namespace": NS})


async def test_queue_full_answers_503_at_once(harness: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness(config(revision(container_concurrency=1), queue_depth=2))
    waiting = [asyncio.ensure_future(h.get()) for _ in range(2)]
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    async with asyncio.timeout(5):
        while throttler.waiting < 2:
            await asyncio.sleep(0.01)
    status, body, _ = await asyncio.wait_for(h.get(), 1)
    assert (status, body) == (503, b"pending request queue full\n")
    for w in waiting:
        w.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_client_leaving_while_queued_frees_its_place_and_sends_nothing(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(container_concurrency=1)))
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    _reader, writer = await asyncio.open_connection("127.0.0.1", h.activator.port)
    writer.write(
        f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n".encode() + b"x" * 10
    )
    async with asyncio.timeout(5):
        while throttler.waiting < 1:
            await asyncio.sleep(0.01)
    writer.close()
    async with asyncio.timeout(5):
        while throttler.waiting:
            await asyncio.sleep(0.01)
    assert throttler.breaker.in_flight == 0
    await h.push(config(revision(pods=[pod], container_concurrency=1)))
    await h.healthy("hello-1", 1)
    await asyncio.sleep(0.05)
    assert pod.seen == []


# ------------------------------------------------------------- scale from zero, stats


async def test_cold_start_pokes_once_and_releases_every_waiter(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await harness(config(revision(container_concurrency=1)), report_interval=0.05)
    requests = [asyncio.ensure_future(h.get()) for _ in range(10)]
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    async with asyncio.timeout(5):
        while throttler.waiting < 10:
            await asyncio.sleep(0.01)
    assert len(h.scaler.pokes) == 1
    ((ns, name, stat),) = h.scaler.pokes[0]
    assert (ns, name, stat.average_concurrent_requests, stat.request_count) == (
        NS, "hello-1", 1.0, 1.0,
    )  # fmt: skip
    async with asyncio.timeout(5):
        while len(h.scaler.reports) < 2:
            await asyncio.sleep(0.01)
    # The first report discounts the poke; the next one sees the 10 queued requests.
    assert h.scaler.reports[1][0][2].average_concurrent_requests == pytest.approx(10)
    pod = await Pod().start()
    await h.push(config(revision(pods=[pod], container_concurrency=1)))
    results = await asyncio.gather(*requests)
    assert [r[0] for r in results] == [200] * 10
    assert len(h.scaler.pokes) == 1


async def test_changed_concurrency_moves_waiters_to_the_new_throttler(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await harness(config(revision(container_concurrency=1)))
    old = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    requests = [asyncio.ensure_future(h.get()) for _ in range(3)]
    async with asyncio.timeout(5):
        while old.waiting < 3:
            await asyncio.sleep(0.01)
    pod = await Pod().start()
    await h.push(config(revision(pods=[pod], container_concurrency=2)))
    assert [r[0] for r in await asyncio.gather(*requests)] == [200] * 3
    assert old.retired


async def test_metrics_use_knative_names_without_total_suffix(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    pod = await Pod().start()
    rev = replace(revision(pods=[pod]), service="hello", configuration="hello")
    h = await harness(config(rev), pod_name="act-0")
    await h.get()
    async with h.session.get(f"http://127.0.0.1:{h.activator.metrics_port}/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200
    assert "activator_request_count_total" not in text
    line = next(ln for ln in text.splitlines() if ln.startswith("activator_request_count{"))
    for label in (
        'namespace_name="default"',
        'service_name="hello"',
        'configuration_name="hello"',
        'revision_name="hello-1"',
        'pod_name="act-0"',
        'container_name="activator"',
        'response_code="200"',
        'response_code_class="2xx"',
    ):
        assert label in line
    assert line.endswith(" 1")
    assert "activator_request_latencies_bucket{" in text
    assert "activator_revision_queue_depth{" in text


# ------------------------------------------------------------- routing-header trust


SPOOF = {"Knative-Serving-Revision": "secret-1", "Knative-Serving-Namespace": NS}


@pytest.mark.parametrize("host", [HOST, "nobody.example"])
async def test_routing_headers_from_untrusted_clients_are_ignored_and_stripped(
    harness: Callable[..., Awaitable[Harness]], host: str
) -> None:
    """Issue 15 item 3: facing clients (file mode here), the split headers pick nothing."""
    public, secret = await Pod().start(), await Pod().start()
    hidden = Revision("secret-1", NS, endpoints=(secret.dest,))  # no route exposes it
    h = await harness(config(revision(pods=[public]), hidden))
    status, body, _ = await h.get(Host=host, **SPOOF)
    if host == HOST:
        assert (status, body) == (200, public.dest.encode())  # routed by its Host alone
        assert "knative-serving-revision" not in public.seen[0]
        assert "knative-serving-namespace" not in public.seen[0]
    else:
        assert status == 404
    assert secret.seen == []


async def test_routing_headers_are_trusted_from_a_configured_ingress_network(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    public, secret = await Pod().start(), await Pod().start()
    hidden = Revision("secret-1", NS, endpoints=(secret.dest,))  # no route exposes it
    h = await harness(
        config(revision(pods=[public]), hidden), trust_routing_headers_from="10.0.0.0/8"
    )
    assert (await h.get(**SPOOF))[0] == 200 and secret.seen == []  # 127.0.0.1 is no ingress
    h2 = await harness(config(revision(pods=[public]), hidden), trust_routing_headers_from=LOOPBACK)
    status, body, _ = await h2.get(**SPOOF)
    assert (status, body) == (200, secret.dest.encode())
