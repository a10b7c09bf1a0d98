"""Bodies through the engine: streaming both ways, limits part-way, truncation, back-pressure."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from proxy.http1 import HttpServerProtocol
from proxy.limits import ServerLimits
from tests.component.engine_harness import EngineRig, ProxyUnderTest, UpstreamConn

pytestmark = pytest.mark.timeout(30)


def client_protocols(px: ProxyUnderTest) -> list[HttpServerProtocol]:
    ctx = px.server._ctx
    assert ctx is not None
    return [conn for conn in ctx.connections if isinstance(conn, HttpServerProtocol)]


async def echo_body(conn: UpstreamConn) -> None:
    """Answer each request with its body (decoded) as a Content-Length response."""
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            msg = await conn.request()
            await conn.respond(body=msg.body)


# ------------------------------------------------------------------------- streaming POST


async def test_content_length_post_is_forwarded_byte_for_byte(engine: EngineRig) -> None:
    up = await engine.upstream(echo_body)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    body = bytes(range(256)) * 1000
    await client.send(b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
    await client.send(body)
    resp = await client.response()
    assert (resp.status, resp.body) == (200, body)
    req = up.conns[0].requests[0]
    assert req.header(b"content-length") == b"%d" % len(body)
    assert req.raw.endswith(b"\r\n\r\n" + body)
    assert (await client.get()).status == 200  # still keep-alive on both sides
    assert len(up.conns) == 1


async def test_chunked_post_streams_before_it_ends_and_arrives_whole(engine: EngineRig) -> None:
    first_chunk_seen = asyncio.Event()

    async def stream_reader(conn: UpstreamConn) -> None:
        head = await conn.io.until(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
        assert await conn.io.until(b"\r\n") == b"5\r\n"
        assert await conn.io.exactly(7) == b"hello\r\n"
        first_chunk_seen.set()
        rest = await conn.io.until(b"0\r\n\r\n")
        assert rest == b"6\r\n world\r\n0\r\n\r\n"
        await conn.respond(body=b"done")

    up = await engine.upstream(stream_reader)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    await client.send(b"5\r\nhello\r\n")
    await asyncio.wait_for(first_chunk_seen.wait(), 5)  # streamed, not buffered whole
    await client.send(b"6\r\n world\r\n0\r\n\r\n")
    resp = await client.response()
    assert (resp.status, resp.body) == (200, b"done")


# ------------------------------------------------------------------------------ B5


async def test_b5_chunked_over_limit_before_a_response_is_413_and_upstream_never_completes(
    engine: EngineRig,
) -> None:
    up = await engine.upstream(echo_body)
    px = await engine.proxy(up.port, ServerLimits(max_body_bytes=10))
    client = await engine.client(px.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n"
    )
    await client.send(b"6\r\nghijkl\r\n0\r\n\r\n")
    resp = await client.response()
    assert resp.status == 413
    assert resp.header(b"connection") == b"close"
    await client.assert_closed()
    for conn in up.conns:
        await conn.wait_eof()
        assert not conn.received.endswith(b"0\r\n\r\n")
        assert b"ghijkl" not in conn.received
        assert conn.requests == []  # the upstream never saw a complete request
    assert px.pool.idle_count("127.0.0.1", up.port) == 0


async def test_b5_chunked_over_limit_after_the_response_started_aborts_both(
    engine: EngineRig,
) -> None:
    async def answer_early(conn: UpstreamConn) -> None:
        await conn.io.until(b"\r\n\r\n")
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nlive\r\n")
        await conn.wait_eof(10)

    up = await engine.upstream(answer_early)
    px = await engine.proxy(up.port, ServerLimits(max_body_bytes=10))
    client = await engine.client(px.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n"
    )
    head = await client.response(head_only=True)
    assert head.status == 200
    assert await client.io.exactly(9) == b"4\r\nlive\r\n"
    await client.send(b"a\r\n0123456789\r\n0\r\n\r\n")
    assert await client.eof() == b""  # cut: no last chunk
    conn = up.conns[0]
    await conn.wait_eof()
    assert b"0123456789" not in conn.received
    assert not conn.received.endswith(b"0\r\n\r\n")


# ------------------------------------------------------------------------------- C1


async def test_c1_slow_body_hits_the_idle_timeout_and_upstream_sees_no_complete_body(
    engine: EngineRig,
) -> None:
    up = await engine.upstream(echo_body)
    px = await engine.proxy(up.port, ServerLimits(body_idle_timeout=0.3))
    client = await engine.client(px.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\nabc")
    resp = await client.response()
    assert resp.status == 400
    assert b"idle timeout" in resp.body
    await client.assert_closed()
    conn = up.conns[0]
    await conn.wait_eof()
    assert conn.requests == []
    assert px.server.connection_count == 0


@pytest.mark.timeout(15)
async def test_c1_slowloris_head_is_cut_by_the_head_timeout(engine: EngineRig) -> None:
    up = await engine.upstream()
    px = await engine.proxy(up.port, ServerLimits(head_timeout=0.2))
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n")
    resp = await client.response(timeout=5)  # the sweeper runs once a second
    assert resp.status == 408
    await client.assert_closed()
    assert up.conns == []


# ------------------------------------------------------------------------------- C2 / D7


async def test_c2_slow_reader_pauses_the_upstream_and_keeps_buffers_bounded(
    engine: EngineRig,
) -> None:
    total = 20 * 1024 * 1024
    block = b"x" * 65536
    blocked = asyncio.Event()

    async def firehose(conn: UpstreamConn) -> None:
        await conn.request()
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        sent = 0
        while sent < total:
            conn.writer.write(block)
            sent += len(block)
            try:
                await asyncio.wait_for(conn.writer.drain(), 0.5)
            except TimeoutError:
                blocked.set()  # the proxy stopped reading: back-pressure reached us
                await conn.writer.drain()

    up = await engine.upstream(firehose)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port, rcvbuf=65536)
    await client.send(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(blocked.wait(), 10)
    (proto,) = client_protocols(px)
    assert proto.transport is not None
    buffered = proto.transport.get_write_buffer_size()
    assert buffered < 1024 * 1024, buffered  # about the high-water mark plus one read
    assert proto.write_paused
    # Then the client reads everything: nothing lost, nothing extra.
    head = await client.response(head_only=True)
    assert head.header(b"content-length") == b"%d" % total
    got = 0
    while got < total:
        got += len(await client.io.some(1 << 20))
        client.io.seen.clear()
    assert got == total


async def test_d7_large_streamed_response_keeps_length_and_flat_buffers(
    engine: EngineRig,
) -> None:
    total = 64 * 1024 * 1024
    block = bytes(range(256)) * 256

    async def big(conn: UpstreamConn) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                await conn.request()
                conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
                for _ in range(total // len(block)):
                    conn.writer.write(block)
                    await conn.writer.drain()

    up = await engine.upstream(big)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            for proto in client_protocols(px):
                if proto.transport is not None:
                    peak = max(peak, proto.transport.get_write_buffer_size())
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    head = await client.response(head_only=True)
    assert head.header(b"content-length") == b"%d" % total
    assert head.header(b"transfer-encoding") is None
    got = 0
    first = b""
    while got < total:
        data = await client.io.some(1 << 20)
        if not first:
            first = data[:256]
        got += len(data)
        client.io.seen.clear()
    stop.set()
    await sampler
    assert got == total and first == bytes(range(256))
    assert peak < 1024 * 1024, peak


# --------------------------------------------------------------------------------- D4


async def test_d4_truncated_length_body_is_forwarded_then_the_client_is_cut(
    engine: EngineRig,
) -> None:
    async def short(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"f" * 15)
        conn.close()

    up = await engine.upstream(short)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await client.response(head_only=True)
    assert head.header(b"content-length") == b"100"
    assert await client.eof() == b"f" * 15


async def test_d4_chunked_without_last_chunk_never_gets_one(engine: EngineRig) -> None:
    async def short(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        conn.close()

    up = await engine.upstream(short)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await client.response(head_only=True)
    assert head.header(b"transfer-encoding") == b"chunked"
    rest = await client.eof()
    assert rest == b"5\r\nhello\r\n"
    assert b"0\r\n\r\n" not in rest


async def test_d4_chunked_cut_inside_a_chunk_is_forwarded_as_far_as_it_went(
    engine: EngineRig,
) -> None:
    async def short(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhel")
        conn.close()

    up = await engine.upstream(short)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await client.response(head_only=True)
    rest = await client.eof()
    assert rest == b"3\r\nhel\r\n"


async def test_connection_paused_by_a_slow_client_is_resumed_before_reuse(
    engine: EngineRig,
) -> None:
    total = 4 * 1024 * 1024

    async def big_then_small(conn: UpstreamConn) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                msg = await conn.request()
                if msg.first_line.startswith(b"GET /big"):
                    await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
                    await conn.send(b"z" * total)  # in one go: the last read pauses the proxy
                else:
                    await conn.respond(body=b"small")

    up = await engine.upstream(big_then_small)
    px = await engine.proxy(up.port)
    slow = await engine.client(px.port, rcvbuf=16384)
    await slow.send(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    await slow.response(head_only=True)
    got = 0
    while got < total:
        got += len(await slow.io.some(16384))
        slow.io.seen.clear()
    other = await engine.client(px.port)
    for _ in range(3):
        resp = await other.get(b"/small")
        assert resp.body == b"small"
    assert len(up.conns) == 1  # the very connection that had been paused


async def test_request_body_the_upstream_did_not_wait_for_closes_both_sides(
    engine: EngineRig,
) -> None:
    async def early(conn: UpstreamConn) -> None:
        await conn.io.until(b"\r\n\r\n")
        await conn.respond(413, b"too big for me", b"Connection: close\r\n")
        await conn.wait_eof()

    up = await engine.upstream(early)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"a" * 10)
    resp = await client.response()
    assert (resp.status, resp.body) == (413, b"too big for me")
    assert resp.header(b"connection") == b"close"
    await client.assert_closed()
    await up.conns[0].closed()
    assert px.pool.idle_count("127.0.0.1", up.port) == 0
