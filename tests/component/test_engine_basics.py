"""Engine basics through a real socket: keep-alive, pooling, framing, 1xx, HEAD, caps."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from proxy.limits import ServerLimits
from tests.component.engine_harness import EngineRig, UpstreamConn

pytestmark = pytest.mark.timeout(20)


@pytest.mark.timeout(10)
async def test_two_sequential_requests_share_one_upstream_connection(engine: EngineRig) -> None:
    up = await engine.upstream()
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    first = await client.get(b"/a")
    second = await client.get(b"/b")
    assert (first.status, first.body) == (200, b"ok:/a")
    assert (second.status, second.body) == (200, b"ok:/b")
    assert len(up.conns) == 1
    assert [m.first_line for m in up.conns[0].requests] == [
        b"GET /a HTTP/1.1",
        b"GET /b HTTP/1.1",
    ]
    assert px.pool.idle_count("127.0.0.1", up.port) == 1


async def test_upstream_connection_close_is_not_reused_and_not_passed_on(engine: EngineRig) -> None:
    async def close_after_one(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond(body=b"bye", headers=b"Connection: close\r\n")
        conn.close()

    up = await engine.upstream(close_after_one)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    first = await client.get(b"/1")
    assert (first.status, first.body) == (200, b"bye")
    assert first.header(b"connection") is None  # the client's connection stays open
    second = await client.get(b"/2")
    assert (second.status, second.body) == (200, b"bye")
    assert len(up.conns) == 2
    assert px.pool.idle_count("127.0.0.1", up.port) == 0


async def test_stale_pooled_connection_is_retried_once_for_a_bodyless_request(
    engine: EngineRig,
) -> None:
    async def die_on_second(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond(body=b"first")
        if len(up.conns) == 1:
            await conn.request()  # the reused connection takes the request, then dies
            conn.close()
            return
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                await conn.request()
                await conn.respond(body=b"fresh")

    up = await engine.upstream(die_on_second)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    assert (await client.get(b"/1")).body == b"first"
    second = await client.get(b"/2")
    assert (second.status, second.body) == (200, b"first")
    assert [len(c.requests) for c in up.conns] == [2, 1]
    assert up.conns[1].requests[0].first_line == b"GET /2 HTTP/1.1"


async def test_stale_pooled_connection_is_not_retried_for_a_request_with_a_body(
    engine: EngineRig,
) -> None:
    async def die_on_second(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond()
        await conn.request()
        conn.close()

    up = await engine.upstream(die_on_second)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    assert (await client.get(b"/1")).status == 200
    await client.send(b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    second = await client.response()
    assert second.status == 502
    assert len(up.conns) == 1


@pytest.mark.parametrize(
    "request_head",
    [
        b"POST /2 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"DELETE /2 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"PATCH /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["post", "delete", "patch-empty"],
)
async def test_stale_pooled_connection_never_retries_a_non_idempotent_request(
    engine: EngineRig, request_head: bytes
) -> None:
    async def die_on_second(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.respond()
        await conn.request()
        conn.close()

    up = await engine.upstream(die_on_second)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    assert (await client.get(b"/1")).status == 200
    await client.send(request_head)
    assert (await client.response()).status == 502
    assert len(up.conns) == 1  # it may have reached the application: never sent twice


async def test_103_early_hints_go_out_before_the_final_response(engine: EngineRig) -> None:
    async def hints(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        await conn.respond(body=b"page")

    up = await engine.upstream(hints)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    early = await client.response()
    assert early.status == 103
    assert early.header(b"link") == b"</s.css>; rel=preload"
    final = await client.response()
    assert (final.status, final.body) == (200, b"page")


async def test_upstream_100_continue_is_not_duplicated(engine: EngineRig) -> None:
    async def cont(conn: UpstreamConn) -> None:
        head = await conn.io.until(b"\r\n\r\n")
        assert b"expect" not in head.lower()
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await conn.io.exactly(3)
        await conn.respond(body=b"got")

    up = await engine.upstream(cont)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    )
    interim = await client.response()
    assert interim.status == 100
    await client.send(b"abc")
    final = await client.response()
    assert (final.status, final.body) == (200, b"got")
    assert b"100 Continue" not in final.raw


@pytest.mark.parametrize(
    ("upstream_head", "body_wire", "client_framing"),
    [
        (b"Content-Length: 5\r\n", b"hello", b"content-length"),
        (b"Transfer-Encoding: chunked\r\n", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"chunked"),
        (b"", b"hello", b"chunked"),  # close-delimited upstream: re-framed for the client
    ],
    ids=["length", "chunked", "until-close"],
)
async def test_response_framing_is_length_or_chunked_never_both(
    engine: EngineRig, upstream_head: bytes, body_wire: bytes, client_framing: bytes
) -> None:
    async def answer(conn: UpstreamConn) -> None:
        while True:
            await conn.request()
            await conn.send(b"HTTP/1.1 200 OK\r\n" + upstream_head + b"\r\n" + body_wire)
            if not upstream_head:
                conn.close()
                return

    up = await engine.upstream(answer)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    resp = await client.get()
    assert (resp.status, resp.body) == (200, b"hello")
    has_cl = resp.header(b"content-length") is not None
    has_te = resp.header(b"transfer-encoding") is not None
    assert not (has_cl and has_te)
    assert (has_cl, has_te) == (client_framing == b"content-length", client_framing == b"chunked")
    # and the client connection is still usable
    assert (await client.get(b"/again")).body == b"hello"


async def test_connection_cap_answers_503_and_closes(engine: EngineRig) -> None:
    up = await engine.upstream()
    px = await engine.proxy(up.port, ServerLimits(max_connections=1))
    first = await engine.client(px.port)
    assert (await first.get()).status == 200
    second = await engine.client(px.port)
    resp = await second.response()
    assert resp.status == 503
    assert resp.body == b"too many connections\n"
    await second.assert_closed()
    assert (await first.get()).status == 200  # the first is unaffected
    assert len(up.conns) == 1


# ------------------------------------------------------------------------------ G5 HEAD


async def test_g5_head_keeps_length_sends_no_body_and_connection_is_reusable(
    engine: EngineRig,
) -> None:
    async def head_then_get(conn: UpstreamConn) -> None:
        msg = await conn.request()
        assert msg.first_line.startswith(b"HEAD ")
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-A: 1\r\n\r\n")
        await conn.request()
        await conn.respond(body=b"next")

    up = await engine.upstream(head_then_get)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await client.response(head_only=True)
    assert head.status == 200
    assert head.header(b"content-length") == b"1234"
    assert head.header(b"x-a") == b"1"
    assert head.header(b"transfer-encoding") is None
    nxt = await client.get(b"/n")
    assert (nxt.status, nxt.body) == (200, b"next")  # no stray body bytes in between
    assert len(up.conns) == 1  # the upstream connection was reused too


# ------------------------------------------------------------------------- E1 / E3 headers


async def test_e1_hop_by_hop_headers_are_stripped_both_ways(engine: EngineRig) -> None:
    async def leaky(conn: UpstreamConn) -> None:
        await conn.request()
        await conn.send(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n"
            b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\n"
            b"Upgrade: h2c\r\nX-Fine: 1\r\nContent-Length: 2\r\n\r\nok"
        )
        conn.close()

    up = await engine.upstream(leaky)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    resp = await client.get(
        b"/",
        b"Connection: keep-alive, X-Client-Secret\r\nX-Client-Secret: c\r\nKeep-Alive: 300\r\n"
        b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\n"
        b"X-Fine: 2\r\n",
    )
    assert resp.status == 200
    assert resp.names() == {b"x-fine", b"content-length"}
    sent = up.conns[0].requests[0]
    assert sent.names() == {b"host", b"x-fine", b"x-forwarded-for"}
    assert sent.header(b"x-fine") == b"2"


async def test_e3_xff_appends_the_peer_and_keeps_spoofed_values_left(engine: EngineRig) -> None:
    up = await engine.upstream()
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.get(b"/", b"X-Forwarded-For: 1.2.3.4\r\nForwarded: for=evil\r\n")
    sent = up.conns[0].requests[0]
    assert sent.header_all(b"x-forwarded-for") == [b"1.2.3.4, 127.0.0.1"]
    assert sent.header(b"forwarded") == b"for=evil"  # left for the component's policy


async def test_request_bytes_reach_the_upstream_as_expected(engine: EngineRig) -> None:
    up = await engine.upstream()
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.get(b"/path?q=%20x", b"X-CaSe: MiXeD  value\r\nAccept: */*\r\n")
    # Nothing to drop: the fields go as they came, Host in its place.
    assert up.conns[0].received == (
        b"GET /path?q=%20x HTTP/1.1\r\nHost: test\r\nX-CaSe: MiXeD  value\r\nAccept: */*\r\n"
        b"X-Forwarded-For: 127.0.0.1\r\n\r\n"
    )
    # Something to drop: the rest keep their order, Host follows them.
    await client.get(b"/b", b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nAccept: */*\r\n")
    assert up.conns[0].received.endswith(
        b"GET /b HTTP/1.1\r\nAccept: */*\r\nHost: test\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
    )


# --------------------------------------------------------------------------- G7 pipelining


async def test_g7_three_pipelined_requests_get_in_order_responses(engine: EngineRig) -> None:
    up = await engine.upstream()
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in (1, 2, 3)))
    bodies = [(await client.response()).body for _ in range(3)]
    assert bodies == [b"ok:/1", b"ok:/2", b"ok:/3"]
    assert (await client.get(b"/4")).body == b"ok:/4"


async def test_g7_invalid_request_mid_pipeline_stops_processing(engine: EngineRig) -> None:
    up = await engine.upstream()
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"
        b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    first = await client.response()
    assert (first.status, first.body) == (200, b"ok:/1")
    bad = await client.response()
    assert bad.status == 400
    assert bad.header(b"connection") == b"close"
    await client.assert_closed()
    assert [m.first_line for c in up.conns for m in c.requests] == [b"GET /1 HTTP/1.1"]


async def test_g7_http10_client_gets_length_or_close_delimited_never_chunked(
    engine: EngineRig,
) -> None:
    async def chunky(conn: UpstreamConn) -> None:
        msg = await conn.request()
        assert msg.first_line.endswith(b"HTTP/1.1")  # the upstream hop is always 1.1
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await conn.send(b"2\r\nde\r\n0\r\n\r\n")

    up = await engine.upstream(chunky)
    px = await engine.proxy(up.port)
    client = await engine.client(px.port)
    await client.send(b"GET / HTTP/1.0\r\n\r\n")
    resp = await client.response()
    assert resp.first_line.startswith(b"HTTP/1.1 200")
    assert resp.header(b"transfer-encoding") is None
    assert resp.until_close and resp.body == b"abcde"
