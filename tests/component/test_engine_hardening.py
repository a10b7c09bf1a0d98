"""Request-path fixes found by attacking Sluice on loopback (issue 15, item 4)."""

from __future__ import annotations

import asyncio

import pytest

from tests.component.engine_harness import EngineRig, UpstreamConn
from tests.component.test_engine_faults import until

pytestmark = pytest.mark.timeout(20)


async def echo(conn: UpstreamConn) -> None:
    """Answer each request with its target, Host and body."""
    while True:
        msg = await conn.request(timeout=30)
        target = msg.first_line.split(b" ")[1]
        host = msg.header(b"host") or b""
        await conn.respond(body=b"%s %s %s" % (target, host, msg.body))


H2C = (
    b"POST /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\n"
)


@pytest.mark.parametrize("split", [False, True])
async def test_upgrade_request_with_a_body_is_served_as_a_plain_request(
    engine: EngineRig, split: bool
) -> None:
    """``curl --http2 -d``: the upgrade is declined and the body reaches the app whole."""
    up = await engine.upstream(echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    if split:
        await client.send(H2C + b"he")
        await asyncio.sleep(0.05)
        await client.send(b"llo")
    else:
        await client.send(H2C + b"hello")
    resp = await client.response()
    assert (resp.status, resp.body) == (200, b"/up h hello")
    assert resp.header(b"connection") == b"close"
    (msg,) = up.conns[0].requests
    assert msg.header(b"upgrade") is None and msg.header(b"http2-settings") is None
    await client.assert_closed()


async def test_upgrade_request_with_a_chunked_body_is_refused_at_once(engine: EngineRig) -> None:
    up = await engine.upstream(echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    resp = await client.response()
    assert resp.status == 400
    assert up.conns == []


async def test_absolute_form_target_names_the_one_authority(engine: EngineRig) -> None:
    """Routing (which reads Host) and forwarding see the same authority: the target's."""
    up = await engine.upstream(echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET http://other.example/x?y HTTP/1.1\r\nHost: hello.example\r\n\r\n")
    resp = await client.response()
    assert (resp.status, resp.body) == (200, b"/x?y other.example ")
    (ex,) = px.exchanges
    assert (ex.header(b"host"), ex.target) == (b"other.example", b"/x?y")


@pytest.mark.parametrize(
    "target", [b"http:///x", b"http://a@b.example/x", b"http://a b/x", b"http://a..b/x"]
)
async def test_absolute_form_without_a_valid_authority_is_400(
    engine: EngineRig, target: bytes
) -> None:
    up = await engine.upstream(echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target)
    resp = await client.response()
    assert resp.status == 400
    assert up.conns == []


async def test_connect_is_refused(engine: EngineRig) -> None:
    up = await engine.upstream(echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
    resp = await client.response()
    assert resp.status == 405
    await client.assert_closed()
    assert up.conns == []


async def test_host_with_trailing_whitespace_is_accepted_trimmed(engine: EngineRig) -> None:
    up = await engine.upstream(echo)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET /t HTTP/1.1\r\nHost: name \t\r\n\r\n")
    resp = await client.response()
    assert (resp.status, resp.body) == (200, b"/t name ")
    await client.send(b"GET /t HTTP/1.1\r\nHost: na me\r\n\r\n")
    assert (await client.response()).status == 400


@pytest.mark.parametrize(
    ("te", "body"),
    [
        (b"gzip, chunked", b"5\r\nhello\r\n0\r\n\r\n"),
        (b"gzip", b"hello"),
        (b"chunked, chunked", b"5\r\nhello\r\n0\r\n\r\n"),
    ],
)
async def test_upstream_transfer_codings_other_than_chunked_are_502(
    engine: EngineRig, te: bytes, body: bytes
) -> None:
    async def coded(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n%s" % (te, body))
        conn.close()

    up = await engine.upstream(coded)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    resp = await client.get()
    assert resp.status == 502 and b"Transfer-Encoding" in resp.body


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",  # malformed
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",  # a 1xx, then the close
        b"HTTP/1.1 200 OK\r\nContent-",  # part of a head
    ],
)
async def test_a_request_that_reached_the_app_is_never_replayed(
    engine: EngineRig, answer: bytes
) -> None:
    """Only a reused connection that closed before one answer byte earns a replay."""
    arrivals: list[bytes] = []

    async def once_then_bad(conn: UpstreamConn) -> None:
        msg = await conn.request()
        arrivals.append(msg.first_line)
        await conn.respond(body=b"first")
        msg = await conn.request()
        arrivals.append(msg.first_line)
        await conn.send(answer)
        conn.close()

    up = await engine.upstream(once_then_bad)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    assert (await client.get(b"/1")).status == 200
    await until(lambda: px.pool.idle_count("127.0.0.1", up.port) == 1)
    resp = await client.get(b"/2")
    if resp.status == 103:
        resp = await client.response()
    assert resp.status == 502
    assert len(arrivals) == 2 and len(up.conns) == 1  # no second attempt


async def test_a_reused_connection_closed_before_any_answer_is_replayed_once(
    engine: EngineRig,
) -> None:
    async def close_on_second(conn: UpstreamConn) -> None:
        msg = await conn.request()
        await conn.respond(body=b"first")
        msg = await conn.request()
        del msg
        conn.close()  # the keep-alive race: closed before answering

    async def script(conn: UpstreamConn) -> None:
        if len(up.conns) == 1:
            await close_on_second(conn)
        else:
            msg = await conn.request()
            await conn.respond(body=b"again:" + msg.first_line.split(b" ")[1])

    up = await engine.upstream(script)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    assert (await client.get(b"/1")).status == 200
    await until(lambda: px.pool.idle_count("127.0.0.1", up.port) == 1)
    resp = await client.get(b"/2")
    assert (resp.status, resp.body) == (200, b"again:/2")
