"""Probing pods before use (reference §2.6, §5.11), with fake probes and scripted servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from activator.backends import (
    Backends,
    BackendsUpdate,
    MeshMode,
    ProbeOutcome,
    RevisionWatcher,
    WatchOptions,
    probe_queue,
    split_dest,
)
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


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, b"queuex", ProbeOutcome.FAIL),
        (200, b"", ProbeOutcome.FAIL),
        (404, b"queue", ProbeOutcome.FAIL),
        (503, b"queue", ProbeOutcome.MESH),
        (502, b"", ProbeOutcome.MESH),
    ],
)
async def test_probe_fails_on_anything_but_200_queue(
    status: int, body: bytes, outcome: ProbeOutcome
) -> None:
    async def qp(ex: Exchange) -> None:
        ex.send(status, body)

    server, dest = await serve(qp)
    try:
        assert await probe_queue(dest, 0.3) is outcome
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


# ------------------------------------------- Kubernetes readiness, mesh and ClusterIP rules


class OutcomeProbe:
    """Scripted ``ProbeOutcome`` per dest (FAIL when unscripted); records every call."""

    def __init__(self, outcomes: dict[str, ProbeOutcome] | None = None) -> None:
        self.outcomes = dict(outcomes or {})
        self.calls: list[str] = []

    async def __call__(self, dest: str, timeout: float) -> ProbeOutcome:
        self.calls.append(dest)
        return self.outcomes.get(dest, ProbeOutcome.FAIL)


async def start_watcher(
    probe: OutcomeProbe, **options: object
) -> tuple[RevisionWatcher, asyncio.Queue[BackendsUpdate], asyncio.Task[None]]:
    q: asyncio.Queue[BackendsUpdate] = asyncio.Queue()
    w = RevisionWatcher(KEY, q.put_nowait, probe, 0.01, 0.3, **options)  # type: ignore[arg-type]
    return w, q, asyncio.ensure_future(w.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_not_ready_pod_that_passes_is_used_before_kubernetes_agrees() -> None:
    probe = OutcomeProbe({"a:1": ProbeOutcome.OK})
    w, q, task = await start_watcher(probe)
    try:
        w.set_pods(frozenset(), frozenset({"a:1"}))
        assert (await next_update(q)).dests == {"a:1"}
    finally:
        await stop(task)


async def test_without_probe_optimisation_a_pod_waits_for_kubernetes() -> None:
    probe = OutcomeProbe({"a:1": ProbeOutcome.OK})
    w, q, task = await start_watcher(probe, probe_optimisation=False)
    try:
        w.set_pods(frozenset(), frozenset({"a:1"}))
        await asyncio.sleep(0.05)
        assert q.empty() and len(probe.calls) >= 2  # probed, passed, still not trusted
        w.set_pods(frozenset({"a:1"}), frozenset())
        assert (await next_update(q)).dests == {"a:1"}
    finally:
        await stop(task)


async def test_pod_going_from_ready_to_not_ready_is_probed_again_and_dropped() -> None:
    probe = OutcomeProbe({"a:1": ProbeOutcome.OK, "b:1": ProbeOutcome.OK})
    w, q, task = await start_watcher(probe)
    try:
        w.set_pods(frozenset({"a:1", "b:1"}), frozenset())
        assert (await next_update(q)).dests == {"a:1", "b:1"}
        probe.outcomes["b:1"] = ProbeOutcome.FAIL
        w.set_pods(frozenset({"a:1"}), frozenset({"b:1"}))
        assert (await next_update(q)).dests == {"a:1"}
    finally:
        await stop(task)


async def test_mesh_answers_on_every_pod_fall_back_to_the_cluster_ip() -> None:
    probe = OutcomeProbe(
        {"a:1": ProbeOutcome.MESH, "b:1": ProbeOutcome.MESH, "10.9.9.9:80": ProbeOutcome.OK}
    )
    w, q, task = await start_watcher(probe)
    try:
        w.set_cluster_ip("10.9.9.9:80")
        w.set_pods(frozenset({"a:1"}), frozenset({"b:1"}))
        update = await next_update(q)
        assert update == BackendsUpdate(KEY, frozenset({"a:1"}), "10.9.9.9:80")
        assert not w.pods_addressable
    finally:
        await stop(task)


async def test_a_non_mesh_failure_never_falls_back_to_the_cluster_ip() -> None:
    probe = OutcomeProbe({"a:1": ProbeOutcome.FAIL, "10.9.9.9:80": ProbeOutcome.OK})
    w, q, task = await start_watcher(probe)
    try:
        w.set_cluster_ip("10.9.9.9:80")
        w.set_pods(frozenset({"a:1"}), frozenset())
        await asyncio.sleep(0.05)
        assert q.empty() and "10.9.9.9:80" not in probe.calls
    finally:
        await stop(task)


@pytest.mark.parametrize(
    "options", [{"passthrough": True}, {"mesh_mode": MeshMode.DISABLED}], ids=str
)
async def test_passthrough_and_mesh_disabled_never_fall_back(options: dict[str, object]) -> None:
    probe = OutcomeProbe({"a:1": ProbeOutcome.MESH, "10.9.9.9:80": ProbeOutcome.OK})
    w, q, task = await start_watcher(probe, **options)
    try:
        w.set_cluster_ip("10.9.9.9:80")
        w.set_pods(frozenset(), frozenset({"a:1"}))  # not ready: probed in every mode
        await asyncio.sleep(0.05)
        assert q.empty() and "a:1" in probe.calls and "10.9.9.9:80" not in probe.calls
    finally:
        await stop(task)


async def test_mesh_enabled_uses_the_cluster_ip_even_with_healthy_pods() -> None:
    probe = OutcomeProbe({"a:1": ProbeOutcome.OK, "10.9.9.9:80": ProbeOutcome.OK})
    w, q, task = await start_watcher(probe, mesh_mode=MeshMode.ENABLED)
    try:
        w.set_cluster_ip("10.9.9.9:80")
        w.set_pods(frozenset({"a:1"}), frozenset())
        assert (await next_update(q)).cluster_ip == "10.9.9.9:80"
        assert "a:1" not in probe.calls
    finally:
        await stop(task)


async def test_mesh_mode_other_than_auto_trusts_kubernetes_ready_pods() -> None:
    probe = OutcomeProbe()
    w, q, task = await start_watcher(probe, mesh_mode=MeshMode.DISABLED)
    try:
        w.set_pods(frozenset({"a:1"}), frozenset())
        assert (await next_update(q)).dests == {"a:1"}
        assert "a:1" not in probe.calls
    finally:
        await stop(task)


async def test_backends_touches_only_the_revision_an_event_names() -> None:
    q: asyncio.Queue[BackendsUpdate] = asyncio.Queue()
    probe = OutcomeProbe({"a:1": ProbeOutcome.OK, "b:1": ProbeOutcome.OK})
    b = Backends(q.put_nowait, probe, interval=0.01)
    try:
        b.set_pods(("ns", "x"), frozenset({"a:1"}), frozenset())
        b.set_pods(("ns", "y"), frozenset(), frozenset({"b:1"}), WatchOptions())
        got = {(await next_update(q)).key for _ in range(2)}
        assert got == {("ns", "x"), ("ns", "y")}
        b.drop(("ns", "x"))
        assert not b.watched(("ns", "x")) and b.watched(("ns", "y"))
    finally:
        await b.close()


async def test_passthrough_probe_carries_the_private_host_and_header() -> None:
    seen: list[tuple[bytes | None, bytes | None]] = []

    async def qp(ex: Exchange) -> None:
        seen.append((ex.header(b"host"), ex.header(b"k-passthrough-lb")))
        ex.send(200, b"queue")

    server, dest = await serve(qp)
    q: asyncio.Queue[BackendsUpdate] = asyncio.Queue()
    b = Backends(q.put_nowait, interval=0.01)
    try:
        b.set_pods(
            KEY, frozenset({dest}), frozenset(), WatchOptions(passthrough_host="rev-private.ns")
        )
        assert (await next_update(q)).dests == {dest}
        assert seen[0] == (b"rev-private.ns", b"true")
    finally:
        await b.close()
        await server.shutdown(grace=0)
