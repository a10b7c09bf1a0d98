"""Cold-start breakdowns, sticky revisions and header rules through the activator's sockets."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from activator.app import Activator, Settings
from activator.model import HeaderRule, Revision, Route, RoutingConfig, Stickiness, TrafficTarget
from activator.source import PushSource
from proxy.http1 import Exchange
from proxy.server import HttpServer

pytestmark = pytest.mark.timeout(60)

NS = "default"
HOST = "hello.default.localhost"


class Pods:
    """Scripted queue-proxies answering with their revision's name."""

    def __init__(self) -> None:
        self.servers: list[HttpServer] = []

    async def start(self, name: str) -> str:
        async def handle(ex: Exchange) -> None:
            if ex.header(b"k-network-probe") == b"queue":
                ex.send(200, b"queue")
            else:
                ex.send(200, name.encode())

        server = HttpServer(handle)
        await server.start("127.0.0.1", 0)
        self.servers.append(server)
        return f"127.0.0.1:{server.port}"


class Client:
    """One keep-alive HTTP/1.1 connection: small, so thousands of requests stay quick."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, *headers: tuple[str, str]) -> tuple[int, dict[str, str], bytes]:
        lines = [f"GET / HTTP/1.1\r\nHost: {HOST}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in headers]
        self.writer.write(("".join(lines) + "\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *rest = head.decode("latin-1").split("\r\n")
        found: dict[str, str] = {}
        for line in rest:
            if line:
                k, _, v = line.partition(":")
                found[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(found.get("content-length", "0")))
        return int(status_line.split()[1]), found, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def stack() -> AsyncIterator[Callable[..., Awaitable[tuple[Activator, PushSource]]]]:
    made: list[Activator] = []
    pods = Pods()

    async def make(
        cfg: RoutingConfig, rand: Callable[[], float] | None = None, **kw: object
    ) -> tuple[Activator, PushSource]:
        settings = Settings(
            config=Path("unused.yaml"),
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            probe_interval=0.02,
            report_interval=3600.0,
            **kw,  # type: ignore[arg-type]
        )
        source = PushSource(cfg)
        act = Activator(settings, source, rand=rand)
        await act.start()
        made.append(act)
        return act, source

    make.pods = pods  # type: ignore[attr-defined]
    yield make
    for act in made:
        await act.close()
    for server in pods.servers:
        await server.shutdown(grace=0.1)


async def ready(act: Activator, *names: str) -> None:
    def all_ready() -> bool:
        throttlers = act.handler.snapshot.throttlers
        return all((NS, n) in throttlers and throttlers[(NS, n)].assigned for n in names)

    await act.wait_for(all_ready)


def split_config(endpoints: dict[str, str], route: Route, **revision_kw: object) -> RoutingConfig:
    revisions = tuple(
        Revision(name, NS, endpoints=(dest,) if dest else (), **revision_kw)  # type: ignore[arg-type]
        for name, dest in endpoints.items()
    )
    return RoutingConfig(tag_header_routing=True, routes=(route,), revisions=revisions)


# ----------------------------------------------------------------------- stickiness


async def test_thousand_sticky_clients_split_ninety_ten_and_keep_their_revision(
    stack: Callable[..., Awaitable[tuple[Activator, PushSource]]],
) -> None:
    pods: Pods = stack.pods  # type: ignore[attr-defined]
    endpoints = {"v1": await pods.start("v1"), "v2": await pods.start("v2")}
    route = Route(
        "hello",
        NS,
        (TrafficTarget("v1", 90), TrafficTarget("v2", 10)),
        Stickiness("cookie", "sluice-hello", 600),
    )
    act, _ = await stack(split_config(endpoints, route), rand=random.Random(16).random)
    await ready(act, "v1", "v2")
    first: Counter[str] = Counter()
    kept = 0

    async def one_client() -> None:
        nonlocal kept
        client = await Client.open(act.port)
        try:
            status, headers, body = await client.get()
            assert status == 200
            cookie = headers["set-cookie"]
            assert (
                cookie
                == f"sluice-hello={body.decode()}; Max-Age=600; Path=/; HttpOnly; SameSite=Lax"
            )
            first[body.decode()] += 1
            pin = cookie.split(";")[0]
            for _ in range(19):
                status, headers, again = await client.get(("Cookie", f"theme=dark; {pin}"))
                assert (status, again, "set-cookie" in headers) == (200, body, False)
            kept += 1
        finally:
            await client.close()

    for _ in range(20):
        await asyncio.gather(*(one_client() for _ in range(50)))
    assert kept == 1000
    assert 870 <= first["v1"] <= 930, first
    assert 70 <= first["v2"] <= 130, first


async def test_a_cookie_for_a_zero_percent_or_unknown_revision_is_replaced(
    stack: Callable[..., Awaitable[tuple[Activator, PushSource]]],
) -> None:
    pods: Pods = stack.pods  # type: ignore[attr-defined]
    endpoints = {"v1": await pods.start("v1"), "v2": await pods.start("v2")}
    route = Route(
        "hello",
        NS,
        (TrafficTarget("v1", 100), TrafficTarget("v2", 0, tag="old")),
        Stickiness("cookie", "pin"),
    )
    act, _ = await stack(split_config(endpoints, route))
    await ready(act, "v1", "v2")
    client = await Client.open(act.port)
    try:
        for stale in ("v2", "gone", ""):
            status, headers, body = await client.get(("Cookie", f"pin={stale}"))
            assert (status, body) == (200, b"v1")
            assert headers["set-cookie"].startswith("pin=v1;")
    finally:
        await client.close()


async def test_header_rules_route_before_the_split_and_the_tag_header_still_wins(
    stack: Callable[..., Awaitable[tuple[Activator, PushSource]]],
) -> None:
    pods: Pods = stack.pods  # type: ignore[attr-defined]
    endpoints = {n: await pods.start(n) for n in ("v1", "v2", "v3")}
    route = Route(
        "hello",
        NS,
        (TrafficTarget("v1", 100), TrafficTarget("v2", 0, tag="beta")),
        header_rules=(HeaderRule("x-beta", "yes", tag="beta"), HeaderRule("x-eu", "1", "v3")),
    )
    act, _ = await stack(split_config(endpoints, route))
    await ready(act, "v1", "v2", "v3")
    client = await Client.open(act.port)
    try:
        assert (await client.get())[2] == b"v1"
        assert (await client.get(("X-Beta", "yes")))[2] == b"v2"
        assert (await client.get(("X-EU", "1")))[2] == b"v3"
        assert (await client.get(("X-EU", "2")))[2] == b"v1"
        assert (await client.get(("X-EU", "1"), ("Knative-Serving-Tag", "beta")))[2] == b"v2"
        _, headers, _ = await client.get(("X-EU", "1"))
        assert "set-cookie" not in headers and "server-timing" not in headers
    finally:
        await client.close()


# ----------------------------------------------------------------------- cold starts


@pytest.mark.parametrize("shown", [True, False])
async def test_a_cold_start_answers_with_its_breakdown_when_enabled(
    stack: Callable[..., Awaitable[tuple[Activator, PushSource]]], shown: bool
) -> None:
    pods: Pods = stack.pods  # type: ignore[attr-defined]
    route = Route("hello", NS, (TrafficTarget("v1", 100),))
    act, source = await stack(split_config({"v1": ""}, route, server_timing=shown))
    client = await Client.open(act.port)
    try:
        started = time.monotonic()
        pending = asyncio.ensure_future(client.get())
        throttler = act.handler.snapshot.throttlers[(NS, "v1")]
        async with asyncio.timeout(5):
            while throttler.waiting < 1:  # nothing to await: the request is in the handler
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # the unseen start-up of a pod
        source.update(split_config({"v1": await pods.start("v1")}, route, server_timing=shown))
        status, headers, body = await pending
        ttfb = time.monotonic() - started
        assert (status, body) == (200, b"v1")
        if not shown:
            assert "server-timing" not in headers
            return
        phases = {}
        for part in headers["server-timing"].split(", "):
            name, dur = part.split(";dur=")
            phases[name] = float(dur)
        assert list(phases) == ["kube-startup", "held", "first-byte"]
        assert phases["kube-startup"] >= 200
        assert sum(phases.values()) == pytest.approx(ttfb * 1000, rel=0.1)
        # A warm request waits for nothing and says nothing.
        assert "server-timing" not in (await client.get())[1]
    finally:
        await client.close()
    metrics = act.metrics.render().decode()
    assert "activator_cold_start_phase_latencies_count{" in metrics
    assert 'phase="kube-startup"' in metrics
    assert act.handler.cold_starts.summary((NS, "v1"))["count"] == 1
