"""Clients that stop reading (issue 15, item 2): the write-idle timeout, and a drain that
ends in a bounded time even with such a client connected."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from proxy.limits import ServerLimits
from tests.component.engine_harness import EngineRig, RawClient, UpstreamConn
from tests.component.test_engine_faults import until

pytestmark = pytest.mark.timeout(20)

BIG = 16 * 1024 * 1024


async def flood(conn: UpstreamConn) -> None:
    """A response far larger than every socket buffer on the way."""
    await conn.request()
    conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
    block = b"z" * 65536
    for _ in range(BIG // len(block)):
        conn.writer.write(block)
        await conn.writer.drain()


def stop_reading(client: RawClient) -> None:
    """The client's socket takes nothing more (its small receive buffer fills at once)."""
    cast(asyncio.Transport, client.writer.transport).pause_reading()


def test_write_idle_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="write_idle_timeout"):
        ServerLimits(write_idle_timeout=0)


async def test_a_client_that_stops_reading_is_cut_after_write_idle(engine: EngineRig) -> None:
    up = await engine.upstream(flood)
    px = await engine.proxy(up.port, ServerLimits(write_idle_timeout=1.0))
    client = await engine.client(px.port, rcvbuf=4096)
    stop_reading(client)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    loop = asyncio.get_running_loop()
    start = loop.time()
    await until(lambda: px.server.connection_count == 0, timeout=6)
    assert loop.time() - start < 5  # one idle second, then the next sweep or two
    (ex,) = px.exchanges
    assert ex.task is not None
    await asyncio.wait_for(asyncio.wait([ex.task]), 3)


async def test_a_slow_but_steady_reader_is_not_cut(engine: EngineRig) -> None:
    async def paced(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 * 1024 * 1024))
        block = b"z" * 65536
        for _ in range(64):
            conn.writer.write(block)
            await conn.writer.drain()

    up = await engine.upstream(paced)
    px = await engine.proxy(up.port, ServerLimits(write_idle_timeout=1.0))
    client = await engine.client(px.port, rcvbuf=65536)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await client.response(head_only=True)
    loop = asyncio.get_running_loop()
    slow_until = loop.time() + 2.5  # slow for over two idle timeouts
    got = 0
    while got < 4 * 1024 * 1024:
        data = await client.io.some(65536)
        assert data
        got += len(data)
        if loop.time() < slow_until:
            await asyncio.sleep(0.3)
    assert px.server.connection_count == 1


async def test_drain_ends_within_a_bounded_time_with_a_stalled_reader(
    engine: EngineRig,
) -> None:
    up = await engine.upstream(flood)
    px = await engine.proxy(up.port, ServerLimits(write_idle_timeout=1.0))
    client = await engine.client(px.port, rcvbuf=4096)
    stop_reading(client)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await until(lambda: len(px.exchanges) == 1 and px.exchanges[0].response_started)
    # Knative's choice: no grace limit; the stalled reader must not hold the drain open.
    await asyncio.wait_for(px.server.shutdown(grace=None), 6)
    assert px.server.connection_count == 0
