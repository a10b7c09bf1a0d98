"""The task-free path (``fast``) under the faults the task path is tested against.

``Passthrough`` offers ``fast`` and takes every request there: on an idle pooled upstream
connection a request is forwarded from callbacks alone, without one the forwarding dials in a
task of its own. These tests pin that requests really take that path and that it ends every
exchange the way the task path does: responses in order, truncation and
client resets cutting both sides, pooled connections reused only when clean, and a stale
pooled connection retried once on a fresh one for an idempotent request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.http1 import Exchange
from proxy.passthrough import Passthrough
from proxy.pool import UpstreamPool
from proxy.server import HttpServer
from tests.component.engine_harness import (
    HOST,
    RawClient,
    Script,
    ScriptedUpstream,
    UpstreamConn,
    serve_ok,
)
from tests.component.test_engine_faults import until

pytestmark = pytest.mark.timeout(20)


class Recording(Passthrough):
    """Passthrough that notes, per request target, which path served it."""

    def __init__(self, pool: UpstreamPool, host: str, port: int) -> None:
        super().__init__(pool, host, port)
        self.paths: list[tuple[bytes, str]] = []

    def fast(self, ex: Exchange) -> bool:
        taken = super().fast(ex)
        self.paths.append((ex.target, "fast" if taken else "task"))
        return taken


class Rig:
    def __init__(self) -> None:
        self.upstreams: list[ScriptedUpstream] = []
        self.servers: list[HttpServer] = []
        self.clients: list[RawClient] = []
        self.pool = UpstreamPool()

    async def start(
        self, script: Script = serve_ok
    ) -> tuple[ScriptedUpstream, Recording, HttpServer]:
        up = await ScriptedUpstream(script).start()
        self.upstreams.append(up)
        handler = Recording(self.pool, HOST, up.port)
        server = HttpServer(handler)
        await server.start(HOST, 0)
        self.servers.append(server)
        return up, handler, server

    async def client(self, port: int) -> RawClient:
        client = await RawClient.connect(port)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            client.writer.transport.abort()
        for server in self.servers:
            await server.shutdown(grace=0.5)
        self.pool.close()
        for up in self.upstreams:
            await up.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        await r.close()


async def test_second_request_takes_the_fast_path_on_the_pooled_connection(rig: Rig) -> None:
    up, handler, server = await rig.start()
    client = await rig.client(server.port)
    first = await client.get(b"/one")
    second = await client.get(b"/two")
    assert (first.status, first.body) == (200, b"ok:/one")
    assert (second.status, second.body) == (200, b"ok:/two")
    assert handler.paths == [(b"/one", "fast"), (b"/two", "fast")]
    assert len(up.conns) == 1  # one upstream connection, reused


async def test_pipelined_requests_on_the_fast_path_are_answered_in_order(rig: Rig) -> None:
    _up, handler, server = await rig.start()
    client = await rig.client(server.port)
    assert (await client.get(b"/warm")).status == 200
    await client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3)))
    bodies = [(await client.response()).body for _ in range(3)]
    assert bodies == [b"ok:/0", b"ok:/1", b"ok:/2"]
    assert [p for t, p in handler.paths if t != b"/warm"] == ["fast", "fast", "fast"]


async def test_client_reset_mid_response_cuts_the_upstream_and_pools_nothing(rig: Rig) -> None:
    stalled = asyncio.Event()

    async def script(conn: UpstreamConn) -> None:
        msg = await conn.request()
        await conn.respond(body=b"warm")
        msg = await conn.request()
        assert msg.first_line.startswith(b"GET /stall")
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        stalled.set()
        await conn.wait_eof(10)

    up, handler, server = await rig.start(script)
    client = await rig.client(server.port)
    assert (await client.get(b"/warm")).status == 200
    await client.send(b"GET /stall HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(stalled.wait(), 5)
    assert handler.paths[-1] == (b"/stall", "fast")
    client.reset()
    await up.conns[0].closed()  # the engine closed its upstream side
    await until(lambda: server.connection_count == 0)
    assert rig.pool.idle_count(HOST, up.port) == 0


async def test_truncated_upstream_body_reaches_the_client_then_its_connection_closes(
    rig: Rig,
) -> None:
    async def script(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond(body=b"warm")
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n15 bytes only..")
        conn.close()

    _up, handler, server = await rig.start(script)
    client = await rig.client(server.port)
    assert (await client.get(b"/warm")).status == 200
    await client.send(b"GET /cut HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await client.response(head_only=True)
    assert head.status == 200
    assert head.header(b"content-length") == b"100"
    assert await client.eof() == b"15 bytes only.."  # every byte, then FIN, nothing added
    assert handler.paths[-1] == (b"/cut", "fast")


async def test_stale_pooled_connection_is_retried_once_on_a_fresh_one(rig: Rig) -> None:
    async def script(conn: UpstreamConn) -> None:
        if len(up.conns) == 1:
            await conn.request()
            await conn.respond(body=b"warm")
            await conn.request()  # the next request arrives on the pooled connection...
            conn.reset()  # ...which dies without an answer
        else:
            await serve_ok(conn)

    up, handler, server = await rig.start(script)
    client = await rig.client(server.port)
    assert (await client.get(b"/warm")).status == 200
    resp = await client.get(b"/again")
    assert (resp.status, resp.body) == (200, b"ok:/again")
    assert handler.paths[-1] == (b"/again", "fast")
    assert len(up.conns) == 2


async def test_upstream_gone_before_answering_a_post_is_a_502_not_a_retry(rig: Rig) -> None:
    async def script(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond(body=b"warm")
        await conn.request()
        conn.reset()

    up, handler, server = await rig.start(script)
    client = await rig.client(server.port)
    assert (await client.get(b"/warm")).status == 200
    await client.send(b"DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n")
    resp = await client.response()
    assert resp.status == 502
    assert handler.paths[-1] == (b"/x", "fast")
    assert len(up.conns) == 1  # never sent twice
