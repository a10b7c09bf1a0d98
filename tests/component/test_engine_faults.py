"""Vanishing clients and failing upstreams (catalogue C3, C4, D1-D5, D9)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

import pytest

from proxy.errors import GatewayTimeout
from proxy.forward import forward
from proxy.http1 import Exchange, Handler
from tests.component.engine_harness import (
    HOST,
    EngineRig,
    ProxyUnderTest,
    UpstreamConn,
    serve_ok,
)
from tests.ports import closed_port

pytestmark = pytest.mark.timeout(20)

HandlerFactory = Callable[[ProxyUnderTest], Handler]


def queued_handler(gate: asyncio.Event, port: int, cancelled: list[Exchange]) -> HandlerFactory:
    """A handler that waits on ``gate`` (a stand-in for a breaker queue), then forwards."""

    def make(px: ProxyUnderTest) -> Handler:
        async def handler(ex: Exchange) -> None:
            px.exchanges.append(ex)
            try:
                await gate.wait()
            except asyncio.CancelledError:
                cancelled.append(ex)
                raise
            px.statuses.append(await forward(ex, px.pool, HOST, port))

        return handler

    return make


def timed_handler(seconds: float, port: int) -> HandlerFactory:
    """Forward under a response-start deadline, as the components' timeout handlers do."""

    def make(px: ProxyUnderTest) -> Handler:
        async def handler(ex: Exchange) -> None:
            px.exchanges.append(ex)
            try:
                await asyncio.wait_for(forward(ex, px.pool, HOST, port), seconds)
            except TimeoutError:
                if ex.response_started:
                    ex.abort()
                else:
                    raise GatewayTimeout() from None

        return handler

    return make


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition that has no event of its own (connection bookkeeping)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


# ---------------------------------------------------------------------------------- C3


@pytest.mark.parametrize("how", ["close", "reset", "half-close"])
async def test_c3_client_leaving_while_queued_cancels_and_nothing_reaches_upstream(
    engine: EngineRig, how: str
) -> None:
    gate = asyncio.Event()
    cancelled: list[Exchange] = []
    up = await engine.upstream()
    px = await engine.proxy(up.port, handler=queued_handler(gate, up.port, cancelled))
    client = await engine.client(px.port)
    await client.send(b"GET /q HTTP/1.1\r\nHost: h\r\n\r\n")
    await until(lambda: len(px.exchanges) == 1)
    (ex,) = px.exchanges
    {"close": client.close, "reset": client.reset, "half-close": client.half_close}[how]()
    assert ex.task is not None
    await asyncio.wait_for(asyncio.wait([ex.task]), 5)
    assert cancelled == [ex]  # the handler was cancelled where it waited
    gate.set()
    await asyncio.sleep(0)
    assert up.conns == []
    assert px.statuses == []
    if how == "half-close":
        await client.assert_closed()


# ---------------------------------------------------------------------------------- C4


async def test_c4_client_gone_mid_response_closes_the_upstream_connection(
    engine: EngineRig,
) -> None:
    async def stall(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await conn.wait_eof(10)

    up = await engine.upstream(stall)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await client.response(head_only=True)
    assert await client.io.exactly(7) == b"partial"
    client.reset()
    conn = await up.next_conn()
    await conn.closed()  # the proxy closed its upstream side
    await until(lambda: px.server.connection_count == 0)
    assert px.pool.idle_count(HOST, up.port) == 0
    (ex,) = px.exchanges
    assert ex.task is not None and ex.task.done()


async def test_c4_client_gone_after_forwarding_closes_the_upstream_connection(
    engine: EngineRig,
) -> None:
    got_request = asyncio.Event()

    async def slow(conn: UpstreamConn) -> None:
        await conn.request()
        got_request.set()
        await conn.wait_eof(10)

    up = await engine.upstream(slow)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(got_request.wait(), 5)
    client.reset()
    await up.conns[0].closed()
    assert px.pool.idle_count(HOST, up.port) == 0
    await until(lambda: px.server.connection_count == 0)


async def test_c4_half_closed_client_is_taken_as_gone_and_its_request_cut(
    engine: EngineRig,
) -> None:
    """A FIN cannot be told from a client that left: as Go's server (its background read
    cancels the request on EOF), the in-flight request is cut (issue 15)."""
    arrived = asyncio.Event()

    async def slow(conn: UpstreamConn) -> None:
        await conn.request()
        arrived.set()
        await conn.wait_eof(10)

    up = await engine.upstream(slow)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    await asyncio.wait_for(arrived.wait(), 5)
    client.half_close()
    await up.conns[0].closed(3)
    await client.assert_closed()


# ---------------------------------------------------------------------------------- D1


async def test_d1_refused_upstream_is_502_naming_the_cause_and_client_stays_usable(
    engine: EngineRig,
) -> None:
    port = closed_port()
    px = await engine.proxy(port)
    client = await engine.client(px.port)
    for _ in range(2):
        resp = await client.get()
        assert resp.status == 502
        assert b"connection refused" in resp.body
        assert resp.header(b"connection") is None
    assert px.server.connection_count == 1


async def test_d1_upstream_reset_before_replying_is_502_and_not_retried(
    engine: EngineRig,
) -> None:
    async def rst(conn: UpstreamConn) -> None:
        await conn.request()
        conn.reset()

    up = await engine.upstream(rst)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    resp = await client.get()
    assert resp.status == 502
    assert resp.body.startswith(b"upstream closed the connection")
    assert len(up.conns) == 1  # a fresh connection is never retried
    up.script = serve_ok
    assert (await client.get(b"/next")).body == b"ok:/next"


# ------------------------------------------------------------------------------ D2 / D3


async def test_d2_silent_upstream_under_a_deadline_gives_504_and_closes_upstream(
    engine: EngineRig,
) -> None:
    async def silent(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.wait_eof(10)

    up = await engine.upstream(silent)
    px = await engine.proxy(up.port, handler=timed_handler(0.2, up.port))
    client = await engine.client(px.port)
    resp = await client.get()
    assert (resp.status, resp.body) == (504, b"request timeout")
    await up.conns[0].closed()
    assert px.pool.idle_count(HOST, up.port) == 0
    up.script = serve_ok
    assert (await client.get(b"/next")).status == 200


async def test_d3_upstream_stalling_after_headers_gets_the_client_cut(engine: EngineRig) -> None:
    async def stall(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await conn.wait_eof(10)

    up = await engine.upstream(stall)
    px = await engine.proxy(up.port, handler=timed_handler(0.2, up.port))
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await client.response(head_only=True)
    assert head.status == 200
    assert await client.eof() == b"2\r\nhi\r\n"
    await up.conns[0].closed()


# ---------------------------------------------------------------------------------- D5

MALFORMED = {
    "bad-status-line": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH\r\n\r\n",
    "te-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "two-cls": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    "huge-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
    "control-char": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n",
    "bare-cr": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
    "space-in-name": b"HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_d5_malformed_response_is_502_and_upstream_connection_discarded(
    engine: EngineRig, raw: bytes
) -> None:
    async def bad(conn: UpstreamConn) -> None:
        await conn.request()
        with contextlib.suppress(ConnectionError):
            await conn.send(raw)
        await conn.wait_eof()

    up = await engine.upstream(bad)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    resp = await client.get()
    assert resp.status == 502, resp.raw[:200]
    assert b"X-Big" not in resp.raw and b"SSH" not in resp.raw
    await up.conns[0].closed()
    assert px.pool.idle_count(HOST, up.port) == 0
    up.script = serve_ok
    assert (await client.get(b"/next")).body == b"ok:/next"


async def test_d5_unsolicited_bytes_on_an_idle_connection_discard_it(engine: EngineRig) -> None:
    async def chatty(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond(body=b"one")
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
        await conn.wait_eof()

    up = await engine.upstream(chatty)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    assert (await client.get()).body == b"one"
    await up.conns[0].closed()
    up.script = serve_ok
    second = await client.get(b"/2")
    assert second.body == b"ok:/2"
    assert len(up.conns) == 2


# ---------------------------------------------------------------------------------- D9


async def test_d9_upstream_crash_while_reading_the_body_is_502(engine: EngineRig) -> None:
    async def crash(conn: UpstreamConn) -> None:
        await conn.io.until(b"\r\n\r\n")
        await conn.io.exactly(3)
        conn.reset()

    up = await engine.upstream(crash)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
    resp = await client.response()
    assert resp.status == 502
    await client.send(b"def")  # the rest of the body is not taken as a new request
    await client.assert_closed()
    assert len(up.conns) == 1


async def test_d9_upstream_crash_mid_response_aborts_the_client(engine: EngineRig) -> None:
    async def crash(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        conn.reset()

    up = await engine.upstream(crash)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await client.response(head_only=True)
    assert head.status == 200
    assert await client.eof() == b"abc"
    # The handler hears of the cut after the client did (the forwarding reports from a
    # callback and the handler's task resumes on the next loop turn).
    await until(lambda: px.statuses == [200])


async def test_d9_upstream_gone_while_idle_is_dialled_fresh(engine: EngineRig) -> None:
    async def once(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond()
        conn.close()

    up = await engine.upstream(once)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    assert (await client.get()).status == 200
    await up.conns[0].wait_eof()
    assert (await client.get()).status == 200
    assert len(up.conns) == 2


async def test_server_port_reflects_the_socket() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        assert sock.getsockname()[1] > 0
