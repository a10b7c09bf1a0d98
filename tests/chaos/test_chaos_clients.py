"""Chaos tier, in-process: storms of abandoned clients, stalled readers during a drain, and
upstreams that crash under load, against both components (issue 15, item 7).

``make test-chaos`` runs it (marker ``chaos``, outside the default run); the whole tier
stays under three minutes on two cores. Each test states the invariant it attacks: no slot
or place leaks, no abandoned request reaches an app, every drain ends, only 200/502 answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

import queueproxy.main as qp_main
from proxy.http1 import Exchange, HttpServerProtocol
from tests.component.engine_harness import RawClient, UpstreamConn
from tests.component.test_activator_handler import HOST, NS, Harness, Pod, config, revision
from tests.component.test_activator_handler import harness as harness
from tests.component.test_engine_stalled import stop_reading
from tests.component.test_queueproxy_handler import (
    QpRig,
    breaker_of,
    eventually,
    held_qp,
    target,
)
from tests.component.test_queueproxy_handler import rig as rig

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

_H = b"Host: " + HOST.encode() + b"\r\n"
#: Every style of request a departing client may have sent, complete or not.
STYLES: list[bytes] = [
    b"GET /gone HTTP/1.1\r\n" + _H + b"Connection: close\r\n\r\n",
    b"GET /gone HTTP/1.0\r\n" + _H + b"\r\n",
    b"GET /gone HTTP/1.0\r\n" + _H + b"Connection: keep-alive\r\n\r\n",
    b"GET /gone HTTP/1.1\r\n" + _H + b"\r\n",
    b"POST /gone HTTP/1.1\r\n" + _H + b"Content-Length: 100\r\n\r\n" + b"x" * 10,
    b"POST /gone HTTP/1.1\r\n" + _H + b"Connection: close\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /gone HTTP/1.1\r\n" + _H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    b"GET /gone HTTP/1.1\r\n" + _H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
]


async def quitter(port: int, rng: random.Random, sent: list[RawClient]) -> None:
    """Connect, send one style, linger 0-50 ms, leave with FIN or RST."""
    client = await RawClient.connect(port)
    sent.append(client)
    await client.send(rng.choice(STYLES))
    await asyncio.sleep(rng.random() * 0.05)
    if rng.random() < 0.5:
        client.close()
    else:
        client.reset()


async def storm(port: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    sent: list[RawClient] = []
    try:
        for start in range(0, n, 25):
            await asyncio.gather(*(quitter(port, rng, sent) for _ in range(min(25, n - start))))
    finally:
        for client in sent:
            client.writer.transport.abort()


async def test_qp_abandon_storm_leaks_nothing_and_reaches_no_app(rig: QpRig) -> None:
    qp, held, up = await held_qp(rig, container_concurrency=2)
    breaker = breaker_of(qp)
    keep = [asyncio.create_task(rig.get(qp.main.port, b"/keep%d" % i)) for i in range(2)]
    releases = [(await held.next())[1] for _ in range(2)]
    await storm(qp.main.port, 300, seed=1)
    # Queued quitters held no slot, and freed their places: only the two kept requests.
    await eventually(lambda: breaker.in_flight == 2 and qp.stats.concurrency == 2, timeout=5)
    for release in releases:
        release.set()
    assert [(await k).status for k in keep] == [200, 200]
    assert sorted(target(m) for m in held.requests) == [b"/keep0", b"/keep1"]
    # Now with free slots: quitters reach the app and leave while it works on them.
    await storm(qp.main.port, 100, seed=2)
    await eventually(lambda: breaker.in_flight == 0 and qp.stats.concurrency == 0, timeout=5)
    await eventually(lambda: all(c.io.reader.at_eof() for c in up.conns), timeout=5)
    fresh = asyncio.create_task(rig.get(qp.main.port, b"/fresh"))
    while True:
        msg, release = await held.next()
        release.set()
        if target(msg) == b"/fresh":
            break
    assert (await fresh).status == 200


async def test_activator_abandon_storm_never_reaches_a_pod(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    pod = await Pod().start()
    h = await harness(config(revision(container_concurrency=1)))  # no pods yet: all queue
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    await storm(h.activator.port, 200, seed=3)
    async with asyncio.timeout(5):
        while throttler.waiting or throttler.breaker.in_flight:
            await asyncio.sleep(0.01)
    await h.push(config(revision(pods=[pod], container_concurrency=1)))
    await h.healthy("hello-1", 1)
    assert (await h.get("/after"))[0] == 200
    assert len(pod.seen) == 1  # /after only


async def test_qp_drain_ends_with_stalled_readers_and_serves_the_rest(
    rig: QpRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qp_main, "DRAIN_MARGIN", 0.5)
    slow_done = asyncio.Event()

    async def mixed(conn: UpstreamConn) -> None:
        msg = await conn.request(timeout=30)
        if target(msg).startswith(b"/big"):
            conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 26))
            for _ in range(1024):
                conn.writer.write(b"z" * 65536)
                await conn.writer.drain()
        else:
            await slow_done.wait()
            await conn.respond(body=b"done")

    up = await rig.upstream(mixed)
    qp = await rig.start(up.port, drain_quiet_seconds=0.1, revision_timeout_seconds=2)
    stalled = []
    for i in range(20):
        client = await RawClient.connect(qp.main.port, rcvbuf=4096)
        stop_reading(client)
        await client.send(b"GET /big%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
        stalled.append(client)
    normal = [asyncio.create_task(rig.get(qp.main.port, b"/n%d" % i)) for i in range(20)]
    await eventually(lambda: len(up.conns) == 40)
    loop = asyncio.get_running_loop()
    started = loop.time()
    qp.terminate()
    drained = asyncio.create_task(qp.run_until_terminated())
    await asyncio.sleep(0.3)
    slow_done.set()
    try:
        assert [(await n).status for n in normal] == [200] * 20
        await asyncio.wait_for(drained, 10)
        assert loop.time() - started < 6  # revision timeout 2 s + margin 0.5 s, and sweeps
        assert qp.main.connection_count == 0
    finally:
        for client in stalled:
            client.writer.transport.abort()


async def test_qp_crashing_upstream_under_load_answers_200_or_502_and_leaks_nothing(
    rig: QpRig,
) -> None:
    rng = random.Random(4)

    async def crashy(conn: UpstreamConn) -> None:
        while True:
            msg = await conn.request(timeout=30)
            fate = rng.random()
            if fate < 0.2:
                conn.reset()  # crash before answering
                return
            if fate < 0.3:
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                conn.reset()  # crash mid-body
                return
            if fate < 0.35:
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")  # garbage
                conn.close()
                return
            await conn.respond(body=b"ok:" + target(msg))

    up = await rig.upstream(crashy)
    qp = await rig.start(up.port, container_concurrency=4)
    statuses: list[int] = []

    async def client_loop(i: int) -> None:
        for j in range(15):
            client = await rig.client(qp.main.port)
            await client.send(b"GET /r%d-%d HTTP/1.1\r\nHost: h\r\n\r\n" % (i, j))
            try:
                resp = await client.response()
                whole = resp.body == b"ok:/r%d-%d" % (i, j)
                statuses.append(resp.status if whole or resp.status != 200 else -1)
            except (asyncio.IncompleteReadError, ConnectionError):
                statuses.append(-1)  # a cut: the body broke after the head
            client.writer.transport.abort()

    await asyncio.gather(*(client_loop(i) for i in range(20)))
    assert set(statuses) <= {200, 502, -1}, set(statuses)
    assert statuses.count(200) > 150 and statuses.count(502) > 0
    await eventually(lambda: breaker_of(qp).in_flight == 0 and qp.stats.concurrency == 0)


async def test_activator_crashing_pods_under_load_answer_200_or_502(
    harness: Callable[..., Awaitable[Harness]],
) -> None:
    rng = random.Random(5)

    async def crashy(ex: Exchange) -> None:
        if rng.random() < 0.3:
            conn = ex.conn
            assert isinstance(conn, HttpServerProtocol) and conn.transport is not None
            conn.transport.abort()  # the pod dies
            return
        ex.send(200, b"ok")

    pods = [await Pod(crashy).start() for _ in range(2)]
    h = await harness(config(revision(pods=pods, container_concurrency=2)))
    throttler = h.activator.handler.snapshot.throttlers[(NS, "hello-1")]
    results = await asyncio.gather(*(h.get(f"/p{i}") for i in range(200)))
    statuses = [status for status, _, _ in results]
    # Fewer 502s than crashes: a reused connection that died before one byte earns one
    # replay (Go's rule), and a crash can look just like that.
    assert set(statuses) <= {200, 502} and statuses.count(502) > 0
    async with asyncio.timeout(5):
        while throttler.breaker.in_flight:
            await asyncio.sleep(0.01)
