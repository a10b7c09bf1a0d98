"""Clients that leave, in every HTTP version and connection style (issue 15, item 1).

A client that sends ``Connection: close`` or speaks HTTP/1.0 sends nothing after its
request, and the engine must still see its FIN or RST: a request waiting in a queue is
cancelled and never reaches the upstream, and one in flight has its upstream request cut,
as Go's server does (its background read cancels the request's context on EOF).
"""

from __future__ import annotations

import asyncio

import pytest

from proxy.http1 import Exchange, HttpServerProtocol
from tests.component.engine_harness import EngineRig, RawClient, UpstreamConn
from tests.component.test_engine_faults import queued_handler, until

pytestmark = pytest.mark.timeout(20)

#: Request bytes of each connection style a departing client may have used.
STYLES = {
    "http/1.1 close": b"GET /q HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "http/1.0": b"GET /q HTTP/1.0\r\n\r\n",
    "http/1.0 keep-alive": b"GET /q HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "http/1.1 keep-alive": b"GET /q HTTP/1.1\r\nHost: h\r\n\r\n",
    "http/1.1 close, body": (
        b"POST /q HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"
    ),
}


def leave(client: RawClient, how: str) -> None:
    if how == "fin":
        client.close()
    else:
        client.reset()


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("style", list(STYLES))
async def test_client_leaving_while_queued_is_cancelled_and_never_sent(
    engine: EngineRig, style: str, how: str
) -> None:
    gate = asyncio.Event()
    cancelled: list[Exchange] = []
    up = await engine.upstream()
    px = await engine.proxy(up.port, handler=queued_handler(gate, up.port, cancelled))
    client = await engine.client(px.port)
    await client.send(STYLES[style])
    await until(lambda: len(px.exchanges) == 1)
    (ex,) = px.exchanges
    await until(lambda: ex.body_complete)
    leave(client, how)
    assert ex.task is not None
    await asyncio.wait_for(asyncio.wait([ex.task]), 3)
    assert cancelled == [ex]
    gate.set()
    await asyncio.sleep(0.05)
    assert up.conns == []
    await until(lambda: px.server.connection_count == 0)


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("style", list(STYLES))
async def test_client_leaving_while_in_flight_cuts_the_upstream_request(
    engine: EngineRig, style: str, how: str
) -> None:
    arrived = asyncio.Event()

    async def slow(conn: UpstreamConn) -> None:
        await conn.request()
        arrived.set()
        await conn.wait_eof(10)

    up = await engine.upstream(slow)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(STYLES[style])
    await asyncio.wait_for(arrived.wait(), 5)
    leave(client, how)
    await up.conns[0].closed(3)
    await until(lambda: px.server.connection_count == 0)
    (ex,) = px.exchanges
    assert ex.task is not None
    await asyncio.wait_for(asyncio.wait([ex.task]), 3)


async def test_bytes_after_a_last_request_are_discarded_within_a_bound(
    engine: EngineRig,
) -> None:
    """Reading goes on after a ``Connection: close`` request (to see the client leave),
    but what the client sends meanwhile is dropped, and reading stops past a bound."""
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow(conn: UpstreamConn) -> None:
        await conn.request()
        arrived.set()
        await release.wait()
        await conn.respond(body=b"done")

    up = await engine.upstream(slow)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(STYLES["http/1.1 close"] + b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(arrived.wait(), 5)
    (ex,) = px.exchanges
    proto = ex.conn
    assert isinstance(proto, HttpServerProtocol)
    assert not proto._reading_paused  # still reading: a FIN would be seen
    client.writer.write(b"x" * 300_000)  # past the bound: reading pauses, nothing grows
    await until(lambda: proto._reading_paused)
    release.set()
    head = await client.response(head_only=True)
    assert head.status == 200 and head.header(b"connection") == b"close"
    assert b"/smuggled" not in up.all_received
    assert len(up.conns[0].requests) == 1
