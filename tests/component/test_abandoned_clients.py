"""Abandoned clients against both components (issue 15, item 1; Knative #13583).

``ab`` without ``-k`` sends ``Connection: close``, health checkers speak HTTP/1.0: neither
sends a byte after its request, and when such a client gives up (FIN) or resets (RST), its
breaker place or slot must be free at once and its request must never reach the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from activator.model import RoutingConfig
from proxy.http1 import Exchange
from tests.component.engine_harness import RawClient
from tests.component.test_activator_handler import HOST, NS, Harness, Pod, config, revision
from tests.component.test_activator_handler import harness as harness
from tests.component.test_queueproxy_handler import (
    QpRig,
    breaker_of,
    eventually,
    held_qp,
    target,
)
from tests.component.test_queueproxy_handler import rig as rig

pytestmark = pytest.mark.timeout(20)

STYLES = {
    "http/1.1 close": (
        b"GET %s HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nConnection: close\r\n\r\n"
    ),
    "http/1.0": b"GET %s HTTP/1.0\r\nHost: " + HOST.encode() + b"\r\n\r\n",
}


def leave(client: RawClient, how: str) -> None:
    if how == "fin":
        client.close()
    else:
        client.reset()


# ------------------------------------------------------------------------ queue-proxy


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("style", list(STYLES))
async def test_qp_client_leaving_while_queued_frees_its_place_and_sends_nothing(
    rig: QpRig, style: str, how: str
) -> None:
    qp, held, _ = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    a = asyncio.create_task(rig.get(qp.main.port, b"/a"))
    _, release_a = await held.next()
    quitters = []
    for i in range(3):
        quitter = await rig.client(qp.main.port)
        await quitter.send(STYLES[style] % b"/gone%d" % i)
        quitters.append(quitter)
    await eventually(lambda: breaker.in_flight == 4)
    for quitter in quitters:
        leave(quitter, how)
    await eventually(lambda: breaker.in_flight == 1 and qp.stats.concurrency == 1)
    release_a.set()
    assert (await a).status == 200
    c = asyncio.create_task(rig.get(qp.main.port, b"/c"))
    _, release_c = await held.next()
    release_c.set()
    assert (await c).status == 200
    assert [target(m) for m in held.requests] == [b"/a", b"/c"]


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("style", list(STYLES))
async def test_qp_client_leaving_while_in_flight_frees_the_slot_and_cuts_upstream(
    rig: QpRig, style: str, how: str
) -> None:
    qp, held, up = await held_qp(rig, container_concurrency=1)
    breaker = breaker_of(qp)
    quitter = await rig.client(qp.main.port)
    await quitter.send(STYLES[style] % b"/gone")
    await held.next()
    leave(quitter, how)
    await eventually(lambda: breaker.in_flight == 0 and qp.stats.concurrency == 0)
    await eventually(lambda: up.conns[0].io.reader.at_eof())  # the app's request was cut
    b = asyncio.create_task(rig.get(qp.main.port, b"/b"))
    _, release_b = await held.next()
    release_b.set()
    assert (await b).status == 200


# -------------------------------------------------------------------------- activator


async def _wait(pred: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not pred():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("style", list(STYLES))
async def test_activator_client_leaving_while_queued_is_never_sent_to_the_app(
    harness: Callable[..., Awaitable[Harness]], style: str, how: str
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(container_concurrency=1)))
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    quitters = []
    for i in range(5):
        quitter = await RawClient.connect(h.activator.port)
        await quitter.send(STYLES[style] % b"/gone%d" % i)
        quitters.append(quitter)
    await _wait(lambda: throttler.waiting == 5)
    for quitter in quitters:
        leave(quitter, how)
    await _wait(lambda: throttler.waiting == 0)
    assert throttler.breaker.in_flight == 0
    cfg: RoutingConfig = config(revision(pods=[pod], container_concurrency=1))
    await h.push(cfg)
    await h.healthy("hello-1", 1)
    status, _, _ = await h.get("/after")
    assert status == 200
    assert [s.get("k-original-host") for s in pod.seen] == [HOST]  # only /after got there


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("style", list(STYLES))
async def test_activator_client_leaving_while_in_flight_frees_the_slot_and_cuts_the_pod(
    harness: Callable[..., Awaitable[Harness]], style: str, how: str
) -> None:
    arrived = asyncio.Event()
    cut = asyncio.Event()

    async def hang(ex: Exchange) -> None:
        arrived.set()
        try:
            await asyncio.sleep(30)
        finally:
            cut.set()

    pod = await Pod(hang).start()
    h = await harness(config(revision(pods=[pod], container_concurrency=1)))
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    quitter = await RawClient.connect(h.activator.port)
    await quitter.send(STYLES[style] % b"/gone")
    await asyncio.wait_for(arrived.wait(), 5)
    leave(quitter, how)
    await asyncio.wait_for(cut.wait(), 3)  # the pod's request was cut
    await _wait(lambda: throttler.breaker.in_flight == 0)


# ------------------------------------------------------------------- memory (issue 15, 7)


def cyclic_garbage() -> list[str]:
    """Type names of what only the cyclic collector would free, right now."""
    import gc

    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


@pytest.mark.parametrize("where", ["queued", "in flight"])
async def test_abandoned_connections_leave_no_cycles(
    harness: Callable[..., Awaitable[Harness]], where: str
) -> None:
    """A connection (and the upstream one cut with it) is freed by reference counting.
    Left as cycles (protocol and parser, protocol and transport), abandoned connections
    waited for the rare gen-2 collection: RSS grew for minutes under #13583's load."""

    async def hang(ex: Exchange) -> None:
        await asyncio.sleep(30)

    if where == "queued":
        h = await harness(config(revision(container_concurrency=1)))  # no pods: all wait
    else:
        pod = await Pod(hang).start()
        h = await harness(config(revision(pods=[pod], container_concurrency=0)))

    async def storm(n: int) -> None:
        clients = [await RawClient.connect(h.activator.port) for _ in range(n)]
        for client in clients:
            await client.send(STYLES["http/1.1 close"] % b"/gone")
        await asyncio.sleep(0.05)
        for client in clients:
            client.close()
        await _wait(lambda: h.activator.server.connection_count == 0)
        await asyncio.sleep(0.05)

    await storm(5)  # warm: first-use caches, pooled objects
    cyclic_garbage()
    await storm(20)
    leaked = cyclic_garbage()
    assert not {"HttpServerProtocol", "Exchange", "UpstreamConnection"} & set(leaked), leaked
