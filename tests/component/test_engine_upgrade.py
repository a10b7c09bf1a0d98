"""Upgrades through the engine: a real 101 tunnels byte for byte, nothing else does (G1, G2)."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from proxy.limits import ServerLimits
from tests.component.engine_harness import EngineRig, UpstreamConn

pytestmark = pytest.mark.timeout(20)

WS_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
WS_ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def frame(payload: bytes, opcode: int = 1, mask: bool = True) -> bytes:
    """A single small websocket frame (masked as a client sends it)."""
    assert len(payload) < 126
    if not mask:
        return bytes([0x80 | opcode, len(payload)]) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + masked


async def ws_echo(conn: UpstreamConn) -> None:
    """Accept the upgrade, then echo raw bytes until a close frame, answer it and close."""
    head = await conn.io.until(b"\r\n\r\n")
    assert b"Upgrade: websocket" in head
    await conn.send(WS_ACCEPT)
    while True:
        data = await conn.io.some()
        if not data:
            return
        await conn.send(data)
        if data[0] & 0x0F == 8:  # close
            conn.close()
            return


async def test_g1_websocket_handshake_frames_and_close_pass_byte_for_byte(
    engine: EngineRig,
) -> None:
    up = await engine.upstream(ws_echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(WS_REQUEST)
    head = await client.response(head_only=True)
    assert head.status == 101
    assert head.header(b"upgrade") == b"websocket"
    assert head.header(b"connection") == b"Upgrade"
    assert head.header(b"sec-websocket-accept") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    sent = up.conns[0].requests or []
    assert sent == []  # the script read the head raw
    upstream_head = up.conns[0].received
    assert b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" in upstream_head
    for payload in (b"hello", bytes(range(100)), b"\r\n\r\n0\r\n\r\n"):
        msg = frame(payload)
        await client.send(msg)
        assert await client.io.exactly(len(msg)) == msg
    close = frame(b"\x03\xe8", opcode=8)
    await client.send(close)
    assert await client.io.exactly(len(close)) == close  # close code 1000 came back
    await client.assert_closed()  # upstream closed: the tunnel ends for the client too
    assert up.conns[0].received.endswith(close)


async def test_g1_bytes_sent_right_after_the_upgrade_request_are_delivered(
    engine: EngineRig,
) -> None:
    up = await engine.upstream(ws_echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    early = frame(b"early")
    await client.send(WS_REQUEST + early)
    head = await client.response(head_only=True)
    assert head.status == 101
    assert await client.io.exactly(len(early)) == early


async def test_g1_upstream_bytes_right_after_101_are_delivered(engine: EngineRig) -> None:
    hello = frame(b"server-first", mask=False)

    async def greet(conn: UpstreamConn) -> None:
        await conn.io.until(b"\r\n\r\n")
        await conn.send(WS_ACCEPT + hello)
        await conn.wait_eof(10)

    up = await engine.upstream(greet)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(WS_REQUEST)
    assert (await client.response(head_only=True)).status == 101
    assert await client.io.exactly(len(hello)) == hello
    client.close()
    await up.conns[0].closed()  # the client leaving closes the upstream side


async def test_g2_upgrade_answered_200_is_plain_http_then_closes(engine: EngineRig) -> None:
    async def refuse(conn: UpstreamConn) -> None:
        msg = await conn.request()
        assert msg.header(b"upgrade") == b"foo"
        await conn.respond(body=b"plain")
        with contextlib.suppress(ConnectionError):
            await conn.wait_eof()

    up = await engine.upstream(refuse)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
        b"raw bytes that must never be spliced"
    )
    resp = await client.response()
    assert (resp.status, resp.body) == (200, b"plain")
    assert resp.header(b"upgrade") is None
    await client.assert_closed()
    assert b"raw bytes" not in up.conns[0].received


async def test_g2_upgrade_without_websocket_key_to_a_plain_upstream(engine: EngineRig) -> None:
    # With h2c off the engine does not take ``Upgrade: h2c`` itself (``tests/component/
    # test_engine_h2.py`` covers it on): the request goes on as plain HTTP/1.1.
    up = await engine.upstream()
    px = await engine.proxy(up.port, ServerLimits(h2c=False))
    client = await engine.client(px.port)
    await client.send(
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    resp = await client.response()
    assert (resp.status, resp.body) == (200, b"ok:/x")
    sent = up.conns[0].requests[0]
    assert sent.header(b"http2-settings") is None
    await client.assert_closed()


async def test_g2_101_to_a_request_that_did_not_ask_is_502(engine: EngineRig) -> None:
    async def rogue(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(WS_ACCEPT + b"spliced?")
        with contextlib.suppress(ConnectionError):
            await conn.wait_eof()

    up = await engine.upstream(rogue)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    resp = await client.response()
    assert resp.status == 502
    assert b"spliced" not in resp.raw
    await up.conns[0].closed()


async def test_g1_client_leaving_the_tunnel_closes_upstream(engine: EngineRig) -> None:
    up = await engine.upstream(ws_echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(WS_REQUEST)
    assert (await client.response(head_only=True)).status == 101
    client.reset()
    await asyncio.wait_for(_until_no_connections(px.server), 5)


async def _until_no_connections(server: object) -> None:
    while getattr(server, "connection_count", 0):
        await asyncio.sleep(0.005)


async def test_shutdown_cuts_an_open_tunnel_after_its_grace_but_not_before(
    engine: EngineRig,
) -> None:
    up = await engine.upstream(ws_echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(WS_REQUEST)
    assert (await client.response(head_only=True)).status == 101
    loop = asyncio.get_running_loop()
    started = loop.time()
    shutdown = asyncio.ensure_future(px.server.shutdown(grace=None, tunnel_grace=0.3))
    await asyncio.sleep(0.1)
    msg = frame(b"still open")
    await client.send(msg)  # inside the grace the tunnel still carries frames
    assert await client.io.exactly(len(msg)) == msg
    await asyncio.wait_for(shutdown, 5)
    assert loop.time() - started >= 0.3
    await client.assert_closed()
