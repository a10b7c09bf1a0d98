"""Probing pods before use (reference §2.6, §5.11), with fake probes and scripted servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from activator.backends import Backends, BackendsUpdate, RevisionWatcher, probe_queue, split_dest
from proxy.http1 import Exchange
from proxy.server import HttpServer

pytestmark = pytest.mark.timeout(10)

KEY = ("ns", "rev")


class FakeProbe:
    """Scripted probe results per dest; records every call."""

    def __init__(self) -> None:
        self.ok: set[str] = set()
        self.calls: list[str] = []

    async def __call__(self, dest: str, timeout: float) -> bool:
        self.calls.append(dest)
        return dest in self.ok


async def next_update(q: asyncio.Queue[BackendsUpdate]) -> BackendsUpdate:
    return await asyncio.wait_for(q.get(), 2)


@pytest.fixture
async def watched() -> AsyncIterator[
    tuple[RevisionWatcher, FakeProbe, asyncio.Queue[BackendsUpdate]]
]:
    q: asyncio.Queue[BackendsUpdate] = asyncio.Queue()
    probe = FakeProbe()
    w = RevisionWatcher(KEY, q.put_nowait, probe, interval=0.01, timeout=0.3)
    task = asyncio.ensure_future(w.run())
    yield w, probe, q
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_split_dest_handles_ipv6() -> None:
    assert split_dest("10.0.0.1:8012") == ("10.0.0.1", 8012)
    assert split_dest("[::1]:8013") == ("::1", 8013)


async def test_pod_that_answers_the_probe_becomes_a_dest(watched) -> None:  # type: ignore[no-untyped-def]
    w, probe, q = watched
    probe.ok = {"a:1"}
    w.set_endpoints(frozenset({"a:1"}))
    assert await next_update(q) == BackendsUpdate(KEY, frozenset({"a:1"}))


async def test_no_pods_sends_no_update(watched) -> None:  # type: ignore[no-untyped-def]
    w, probe, q = watched
    w.set_endpoints(frozenset())
    await asyncio.sleep(0.05)
    assert q.empty() and probe.calls == []


async def test_slow_ready_pod_is_reprobed_until_it_passes(watched) -> None:  # type: ignore[no-untyped-def]
    w, probe, q = watched
    w.set_endpoints(frozenset({"a:1"}))
    await asyncio.sleep(0.05)
    assert q.empty() and len(probe.calls) >= 2  # rounds repeat while unproven
    probe.ok = {"a:1"}
    assert (await next_update(q)).dests == {"a:1"}


async def test_partial_health_then_all_then_removal(watched) -> None:  # type: ignore[no-untyped-def]
    w, probe, q = watched
    probe.ok = {"a:1"}
    w.set_endpoints(frozenset({"a:1", "b:1"}))
    assert (await next_update(q)).dests == {"a:1"}
    probe.ok = {"a:1", "b:1"}
    assert (await next_update(q)).dests == {"a:1", "b:1"}
    calls = len(probe.calls)
    await asyncio.sleep(0.05)
    assert len(probe.calls) == calls  # all proven: no more probing
    w.set_endpoints(frozenset({"b:1"}))
    assert (await next_update(q)).dests == {"b:1"}
    w.set_endpoints(frozenset())
    assert (await next_update(q)).dests == frozenset()


async def test_flapping_pod_is_probed_again_when_it_comes_back(watched) -> None:  # type: ignore[no-untyped-def]
    w, probe, q = watched
    probe.ok = {"a:1"}
    w.set_endpoints(frozenset({"a:1"}))
    assert (await next_update(q)).dests == {"a:1"}
    w.set_endpoints(frozenset())
    assert (await next_update(q)).dests == frozenset()
    probe.ok = set()
    w.set_endpoints(frozenset({"a:1"}))
    await asyncio.sleep(0.05)
    assert q.empty()  # not trusted again until it passes a probe
    probe.ok = {"a:1"}
    assert (await next_update(q)).dests == {"a:1"}


async def test_backends_starts_and_stops_watchers() -> None:
    q: asyncio.Queue[BackendsUpdate] = asyncio.Queue()
    probe = FakeProbe()
    probe.ok = {"a:1", "b:1"}
    b = Backends(q.put_nowait, probe, interval=0.01)
    b.set_endpoints({("ns", "x"): frozenset({"a:1"}), ("ns", "y"): frozenset({"b:1"})})
    got = {(await next_update(q)).key for _ in range(2)}
    assert got == {("ns", "x"), ("ns", "y")}
    b.set_endpoints({("ns", "x"): frozenset({"a:1"})})
    assert b.healthy(("ns", "y")) == frozenset()
    assert "revisions=1" in repr(b)
    await b.close()


# ------------------------------------------------------------- the real probe request

Handler = Callable[[Exchange], Awaitable[None]]


async def serve(handler: Handler) -> tuple[HttpServer, str]:
    server = HttpServer(handler)
    await server.start("127.0.0.1", 0)
    return server, f"127.0.0.1:{server.port}"


async def test_probe_sends_knative_headers_and_needs_200_queue() -> None:
    seen: list[tuple[bytes, bytes | None, bytes | None]] = []

    async def qp(ex: Exchange) -> None:
        seen.append((ex.target, ex.header(b"k-network-probe"), ex.header(b"user-agent")))
        ex.send(200, b"queue")

    server, dest = await serve(qp)
    try:
        assert await probe_queue(dest, 0.3)
        assert seen == [(b"/healthz", b"queue", b"Knative-Activator-Probe")]
    finally:
        await server.shutdown(grace=0)


@pytest.mark.parametrize(("status", "body"), [(200, b"queuex"), (200, b""), (503, b"queue")])
async def test_probe_fails_on_anything_but_200_queue(status: int, body: bytes) -> None:
    async def qp(ex: Exchange) -> None:
        ex.send(status, body)

    server, dest = await serve(qp)
    try:
        assert not await probe_queue(dest, 0.3)
    finally:
        await server.shutdown(grace=0)


async def test_probe_fails_on_refused_and_on_timeout() -> None:
    async def slow(ex: Exchange) -> None:
        await asyncio.sleep(5)

    server, dest = await serve(slow)
    await server.shutdown(grace=0)
    assert not await probe_queue(dest, 0.3)  # nothing listens any more

    server, dest = await serve(slow)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert not await probe_queue(dest, 0.1)
        assert loop.time() - start < 1
    finally:
        await server.shutdown(grace=0)
