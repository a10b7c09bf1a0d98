"""``HttpServerProtocol`` driven through a fake transport: framing, limits, pipelining, timeouts.

Each case feeds exact bytes and checks the status written, whether the connection was closed,
and which requests reached the handler (catalogue groups A, B, C1, G4, G7).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from proxy import headers
from proxy.http1 import Exchange
from proxy.limits import ServerLimits
from tests.unit.engine_fakes import Recorder, make_protocol, responses, settle, until_closed

pytestmark = pytest.mark.timeout(10)

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


async def feed(
    data: bytes | list[bytes], limits: ServerLimits | None = None, handler: Recorder | None = None
) -> tuple[Recorder, bytes, bool]:
    """Feed ``data`` (one packet or several) and return (handler, bytes written, closed)."""
    rec = handler or Recorder()
    proto, transport = make_protocol(rec, limits)
    for packet in [data] if isinstance(data, bytes) else data:
        if transport.closed:
            break
        proto.data_received(packet)
        await settle(proto)
    await settle(proto)
    return rec, transport.data, transport.closed


def post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n" + body


# ------------------------------------------------------------------- A: smuggling/framing

BAD_FRAMING = {
    # A1: CL + TE, both orders, body hiding a request
    "A1-cl-te": post(
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "A1-te-cl": post(
        b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    # A2: two Content-Length values
    "A2-differ": post(b"Content-Length: 0\r\nContent-Length: 5\r\n", b"hello"),
    "A2-equal": post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "A2-list": post(b"Content-Length: 5, 5\r\n", b"hello"),
    # A3: CL not 1*DIGIT
    "A3-plus": post(b"Content-Length: +5\r\n", b"hello"),
    "A3-minus": post(b"Content-Length: -1\r\n"),
    "A3-hex": post(b"Content-Length: 0x5\r\n", b"hello"),
    "A3-space": post(b"Content-Length: 1 0\r\n", b"0123456789"),
    "A3-huge": post(b"Content-Length: 100000000000000000000000\r\n", b"x"),
    # A5: disguised TE and obs-fold
    "A5-space-before-colon": post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    "A5-obs-fold-te": post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    "A5-obs-fold-other": post(b"X-A: 1\r\n  continued\r\nContent-Length: 0\r\n"),
    # A6: TE in HTTP/1.0
    "A6-te-http10": b"POST /x HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    # A7: bad chunk framing
    "A7-size-0x": post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"),
    "A7-size-negative": post(b"Transfer-Encoding: chunked\r\n", b"-1\r\nhello\r\n0\r\n\r\n"),
    "A7-size-overflow": post(
        b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"
    ),
    "A7-data-longer": post(b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"),
    "A7-bare-lf-size": post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n"),
    "A7-lf-in-extension": post(
        b"Transfer-Encoding: chunked\r\n", b"5;a=b\nc\r\nhello\r\n0\r\n\r\n"
    ),
    "A7-missing-crlf": post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloX0\r\n\r\n"),
    # A8: bad trailer line
    "A8-bad-trailer-line": post(
        b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"
    ),
    # A9: control bytes, spaces, bad tokens, versions
    "A9-bare-cr": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
    "A9-bare-lf-header": b"GET / HTTP/1.1\r\nHost: h\nX-A: a\r\n\r\n",
    "A9-nul": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
    "A9-ctl": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n",
    "A9-space-in-name": b"GET / HTTP/1.1\r\nHost: h\r\nX A: a\r\n\r\n",
    "A9-no-colon": b"GET / HTTP/1.1\r\nHost: h\r\nNoColonHere\r\n\r\n",
    "A9-bad-method": b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
    "A9-http12": b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    "A9-http09": b"GET /\r\n\r\n",
    # E4 / F1 checks the engine does on every request
    "E4-underscore": b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
    "F1-no-host": b"GET / HTTP/1.1\r\n\r\n",
    "F1-two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "F1-host-slash": b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "F1-host-dotdot": b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n",
}


#: Refused with Go's status instead of 400 (issue 15): 501 for a transfer coding other than
#: one ``chunked``, 505 for an HTTP major version other than 1.
GO_STATUS: dict[str, tuple[bytes, int]] = {
    # A4: TE coding lists with chunked not last, or repeated
    "A4-chunked-gzip": (post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 501),
    "A4-gzip-chunked": (post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    "A4-chunked-chunked": (
        post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
        501,
    ),
    "A4-two-lines": (
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        501,
    ),
    "A4-identity-and-length": (
        post(b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n", b"abc"),
        501,
    ),
    "A9-http20": (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
}


@pytest.mark.parametrize(("raw", "status"), list(GO_STATUS.values()), ids=list(GO_STATUS))
async def test_unknown_codings_and_versions_get_gos_status_and_close(
    raw: bytes, status: int
) -> None:
    rec, out, closed = await feed(raw)
    answers = responses(out)
    assert [s for s, _ in answers] == [status], out
    assert b"Connection: close" in answers[0][1]
    assert closed
    assert rec.seen == []


@pytest.mark.parametrize("raw", list(BAD_FRAMING.values()), ids=list(BAD_FRAMING))
async def test_bad_framing_is_refused_with_400_and_close(raw: bytes) -> None:
    rec, out, closed = await feed(raw)
    answers = responses(out)
    assert [status for status, _ in answers] == [400], out
    assert b"Connection: close" in answers[0][1]
    assert closed
    # The smuggled or malformed request never reached the handler... unless its head was
    # fine and the body broke afterwards (chunk errors): then the handler saw it, and failed.
    assert b"/smuggled" not in rec.targets
    if rec.seen:
        assert all(ex.response_done for ex in rec.seen)
        assert rec.bodies == []  # no body was ever handed over as complete


@pytest.mark.parametrize(
    "coding", [b"gzip, chunked", b"identity", b"xchunked", b"gzip"], ids=lambda c: c.decode()
)
async def test_unimplemented_transfer_coding_is_501_and_close(coding: bytes) -> None:
    rec, out, closed = await feed(post(b"Transfer-Encoding: " + coding + b"\r\n", b"0\r\n\r\n"))
    assert [s for s, _ in responses(out)] in ([501], [400])
    assert closed
    assert rec.seen == []


async def test_mixed_case_chunked_is_valid_chunked() -> None:
    rec, out, closed = await feed(
        post(b"Transfer-Encoding: ChUnKeD\r\n", b"5\r\nhello\r\n0\r\n\r\n")
    )
    assert [s for s, _ in responses(out)] == [200]
    assert rec.bodies == [b"hello"]
    assert not closed


async def test_a8_trailers_are_never_merged_into_headers() -> None:
    body = b"5\r\nhello\r\n0\r\nHost: evil\r\nX-T: 1\r\n\r\n"
    rec, out, closed = await feed(post(b"Transfer-Encoding: chunked\r\n", body))
    assert [s for s, _ in responses(out)] == [200]
    assert rec.bodies == [b"hello"]
    names = [k.lower() for k, _ in rec.seen[0].headers]
    assert b"x-t" not in names
    assert names.count(b"host") == 1
    assert not closed


async def test_a8_framing_header_in_trailer_is_dropped_or_refused() -> None:
    body = b"5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n" + SMUGGLED
    rec, out, closed = await feed(post(b"Transfer-Encoding: chunked\r\n", body))
    assert b"/smuggled" not in rec.targets or rec.bodies == [b"hello", b""]
    for ex in rec.seen:
        assert [k for k, _ in ex.headers if k.lower() == b"content-length"] == []
    if [s for s, _ in responses(out)][:1] == [400]:
        assert closed


@pytest.mark.parametrize(
    "opening",
    [b"5\r\nhello\r\n0\r\nX-T: ", b"5;ext="],
    ids=["endless-trailer", "endless-chunk-extension"],
)
async def test_endless_line_inside_a_chunked_body_is_cut_not_buffered(opening: bytes) -> None:
    packets = [post(b"Transfer-Encoding: chunked\r\n", opening)] + [b"v" * 50_000] * 10
    rec, out, closed = await feed(packets)
    assert [s for s, _ in responses(out)] == [400]
    assert closed
    assert rec.bodies == []


async def test_large_chunked_body_in_big_packets_is_not_mistaken_for_an_endless_line() -> None:
    chunk = b"%x\r\n%s\r\n" % (200_000, b"b" * 200_000)
    rec, out, closed = await feed([post(b"Transfer-Encoding: chunked\r\n"), chunk, b"0\r\n\r\n"])
    assert [s for s, _ in responses(out)] == [200]
    assert rec.bodies == [b"b" * 200_000] and not closed


async def test_request_split_byte_by_byte_is_parsed() -> None:
    raw = post(b"Content-Length: 5\r\n", b"hello")
    rec, out, closed = await feed([raw[i : i + 1] for i in range(len(raw))])
    assert [s for s, _ in responses(out)] == [200]
    assert rec.bodies == [b"hello"]
    assert not closed


# ------------------------------------------------------------------------- B: size limits

SMALL = ServerLimits(
    max_request_line=100,
    max_header_bytes=100,
    max_total_header_bytes=300,
    max_header_count=5,
    max_body_bytes=10,
)


@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "byte-packets"])
async def test_b1_long_request_line_is_414(split: bool) -> None:
    raw = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    packets = [raw[i : i + 7] for i in range(0, len(raw), 7)] if split else raw
    rec, out, closed = await feed(packets, SMALL)
    assert [s for s, _ in responses(out)] == [414]
    assert closed and rec.seen == []


async def test_b1_endless_request_line_without_newline_is_refused() -> None:
    rec, out, closed = await feed([b"GET /"] + [b"a" * 50 for _ in range(20)], SMALL)
    assert [s for s, _ in responses(out)] == [414]
    assert closed and rec.seen == []


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (b"X-Big: " + b"v" * 150 + b"\r\n", "single"),
        (b"".join(b"X-%d: %s\r\n" % (i, b"v" * 80) for i in range(4)), "total"),
        (b"".join(b"X-%d: v\r\n" % i for i in range(6)), "count"),
    ],
    ids=["single", "total", "count"],
)
@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "byte-packets"])
async def test_b2_b3_header_limits_are_431(headers: bytes, why: str, split: bool) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n"
    packets = [raw[i : i + 7] for i in range(0, len(raw), 7)] if split else raw
    rec, out, closed = await feed(packets, SMALL)
    assert [s for s, _ in responses(out)] == [431], why
    assert closed and rec.seen == []


async def test_b2_field_size_limit_is_exact() -> None:
    # name + value + 4 bytes of framing = 100, the limit
    rec, out, _ = await feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 91 + b"\r\n\r\n", SMALL
    )
    assert [s for s, _ in responses(out)] == [200] and len(rec.seen) == 1
    rec, out, closed = await feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 92 + b"\r\n\r\n", SMALL
    )
    assert [s for s, _ in responses(out)] == [431] and closed and rec.seen == []


async def test_b2_oversized_field_behind_a_small_pipelined_request_is_431() -> None:
    small = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    big = b"GET /b HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 150 + b"\r\n\r\n"
    rec, out, closed = await feed(small + big, SMALL)  # one packet: both heads in one read
    assert [s for s, _ in responses(out)] == [200, 431]
    assert closed and rec.targets == [b"/a"]


async def test_b3_endless_header_section_is_431() -> None:
    packets = [b"GET / HTTP/1.1\r\nHost: h\r\nX-A: "] + [b"v" * 60] * 20
    rec, out, closed = await feed(packets, SMALL)
    assert [s for s, _ in responses(out)] == [431]
    assert closed and rec.seen == []


async def test_b3_defaults_refuse_16_by_4k_headers_but_take_15_by_4k() -> None:
    def head(n: int) -> bytes:
        lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 4090) for i in range(n))
        return b"GET / HTTP/1.1\r\nHost: h\r\n" + lines + b"\r\n"

    _, out, _ = await feed(head(15))
    assert [s for s, _ in responses(out)] == [200]
    _, out, closed = await feed(head(17))
    assert [s for s, _ in responses(out)] == [431]
    assert closed


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"], ids=["plain", "expect"])
async def test_b4_declared_length_over_limit_is_413_without_100_continue(expect: bytes) -> None:
    rec, out, closed = await feed(post(b"Content-Length: 11\r\n" + expect), SMALL)
    assert [s for s, _ in responses(out)] == [413]
    assert b"100 Continue" not in out
    assert closed and rec.seen == []


async def test_b4_length_at_limit_is_accepted() -> None:
    rec, out, closed = await feed(post(b"Content-Length: 10\r\n", b"0123456789"), SMALL)
    assert [s for s, _ in responses(out)] == [200]
    assert rec.bodies == [b"0123456789"] and not closed


async def test_b5_chunked_body_over_limit_before_anything_read_is_413() -> None:
    body = b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n"
    rec, out, closed = await feed(post(b"Transfer-Encoding: chunked\r\n", body), SMALL)
    assert [s for s, _ in responses(out)] == [413]
    assert closed
    assert rec.bodies == []


# ------------------------------------------------------------------------------ C1: slowloris


async def test_c1_partial_head_times_out_with_408_and_close() -> None:
    rec = Recorder()
    proto, transport = make_protocol(rec, ServerLimits(head_timeout=5))
    proto.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n")
    started = proto.state_since
    proto.check_timeouts(started + 4)
    await settle(proto)
    assert transport.data == b"" and not transport.closed
    proto.data_received(b"X-One: more\r\n")  # one line at a time does not reset the clock
    proto.check_timeouts(started + 5.5)
    await settle(proto)
    assert [s for s, _ in responses(transport.data)] == [408]
    assert transport.closed and rec.seen == []


async def test_c1_idle_keepalive_connection_is_closed_silently() -> None:
    proto, transport = make_protocol(Recorder(), ServerLimits(keepalive_timeout=3))
    proto.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle(proto)
    assert [s for s, _ in responses(transport.data)] == [200]
    written = len(transport.data)
    proto.check_timeouts(proto.state_since + 2)
    assert not transport.closed
    proto.check_timeouts(proto.state_since + 4)
    assert transport.closed and len(transport.data) == written


async def test_c1_busy_connection_is_not_timed_out_by_the_sweeper() -> None:
    gate = asyncio.Event()

    async def slow(ex: Exchange) -> None:
        await gate.wait()
        ex.send(200, b"late")

    proto, transport = make_protocol(Recorder(slow), ServerLimits(head_timeout=1))
    proto.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.sleep(0)
    proto.check_timeouts(proto.state_since + 100)
    assert not transport.closed
    gate.set()
    await settle(proto)
    assert [s for s, _ in responses(transport.data)] == [200]


async def test_c1_body_idle_timeout_answers_400_and_closes() -> None:
    proto, transport = make_protocol(Recorder(), ServerLimits(body_idle_timeout=0.05))
    proto.data_received(post(b"Content-Length: 10\r\n", b"abc"))
    await until_closed(transport)
    assert [s for s, _ in responses(transport.data)] == [400]
    assert b"body idle timeout" in transport.data
    assert transport.closed


# ------------------------------------------------------------------------- G4: expectations


async def test_g4_unknown_expectation_is_417() -> None:
    rec, out, closed = await feed(post(b"Expect: foo\r\nContent-Length: 0\r\n"))
    assert [s for s, _ in responses(out)] == [417]
    assert closed and rec.seen == []


async def test_g4_100_continue_is_sent_only_when_the_body_is_read() -> None:
    async def no_read(ex: Exchange) -> None:
        ex.send(403, b"no")

    _, out, closed = await feed(
        post(b"Expect: 100-continue\r\nContent-Length: 5\r\n"), handler=Recorder(no_read)
    )
    assert b"100 Continue" not in out
    assert [s for s, _ in responses(out)] == [403]
    assert closed  # the unread body makes the connection unusable

    rec2 = Recorder()
    proto, transport = make_protocol(rec2)
    proto.data_received(post(b"Expect: 100-continue\r\nContent-Length: 5\r\n"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.data == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(b"hello")
    await settle(proto)
    assert [s for s, _ in responses(transport.data.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))]
    assert rec2.bodies == [b"hello"] and not transport.closed


async def test_g4_expect_on_http10_sends_no_100() -> None:
    raw = b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    rec, out, _ = await feed(raw)
    assert b"100 Continue" not in out
    assert rec.bodies == [b"hi"]


# -------------------------------------------------------------------------- G7: pipelining


async def test_g7_three_pipelined_requests_are_answered_in_order() -> None:
    order: list[bytes] = []

    async def varied(ex: Exchange) -> None:
        # The first one is the slowest: responses must still come out in order.
        for _ in range({b"/1": 5, b"/2": 0, b"/3": 2}[ex.target]):
            await asyncio.sleep(0)
        order.append(ex.target)
        ex.send(200, ex.target)

    raw = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in (1, 2, 3))
    _, out, closed = await feed(raw, handler=Recorder(varied))
    assert order == [b"/1", b"/2", b"/3"]
    assert [s for s, _ in responses(out)] == [200, 200, 200]
    assert out.index(b"\r\n\r\n/1") < out.index(b"\r\n\r\n/2") < out.index(b"\r\n\r\n/3")
    assert not closed


async def test_g7_invalid_request_mid_pipeline_answers_earlier_then_400_and_stops() -> None:
    raw = (
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    rec, out, closed = await feed(raw)
    assert [s for s, _ in responses(out)] == [200, 400]
    assert rec.targets == [b"/1"]
    assert closed


async def test_g7_pipelined_post_bodies_stay_with_their_requests() -> None:
    raw = post(b"Content-Length: 3\r\n", b"abc") + post(
        b"Transfer-Encoding: chunked\r\n", b"2\r\nde\r\n0\r\n\r\n"
    )
    rec, out, closed = await feed(raw)
    assert rec.bodies == [b"abc", b"de"]
    assert [s for s, _ in responses(out)] == [200, 200] and not closed


async def test_g7_http10_gets_no_chunked_and_closes() -> None:
    async def stream(ex: Exchange) -> None:
        ex.start_response(200, [(b"X-A", b"1")])
        ex.write(b"part1")
        ex.write(b"part2")
        ex.end()

    _, out, closed = await feed(b"GET / HTTP/1.0\r\n\r\n", handler=Recorder(stream))
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert b"Connection: close" in head
    assert body == b"part1part2"
    assert closed


async def test_g7_http10_with_length_and_keep_alive_stays_open() -> None:
    raw = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    rec = Recorder()
    proto, transport = make_protocol(rec)
    proto.data_received(raw)
    await settle(proto)
    head = responses(transport.data)[0][1]
    assert b"Content-Length: 5" in head and b"Connection: keep-alive" in head
    assert not transport.closed
    proto.data_received(b"GET /b HTTP/1.0\r\n\r\n")
    await settle(proto)
    assert [s for s, _ in responses(transport.data)] == [200, 200]
    assert transport.closed  # the second one did not ask for keep-alive


async def test_connection_close_request_is_answered_then_closed_and_rest_ignored() -> None:
    raw = (
        b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    rec, out, closed = await feed(raw)
    assert rec.targets == [b"/1"]
    assert [s for s, _ in responses(out)] == [200]
    assert closed


# --------------------------------------------------------------------------- response rules


async def test_response_never_has_both_length_and_chunked() -> None:
    async def both(ex: Exchange) -> None:
        ex.start_response(200, [(b"X-A", b"1")], 4)
        ex.write(b"abcd")
        ex.end()

    _, out, _ = await feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", handler=Recorder(both))
    head = responses(out)[0][1]
    assert b"Content-Length: 4" in head and b"Transfer-Encoding" not in head


async def test_short_content_length_response_is_cut_not_padded() -> None:
    async def short(ex: Exchange) -> None:
        ex.start_response(200, [], 10)
        ex.write(b"abc")
        ex.end()

    _, out, closed = await feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", handler=Recorder(short))
    assert out.endswith(b"\r\n\r\nabc")
    assert closed


async def test_chunked_response_abort_has_no_last_chunk() -> None:
    async def broken(ex: Exchange) -> None:
        ex.start_response(200, [])
        ex.write(b"abc")
        raise RuntimeError("boom")

    _, out, closed = await feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", handler=Recorder(broken))
    assert out.endswith(b"3\r\nabc\r\n")
    assert b"0\r\n\r\n" not in out
    assert closed


async def test_handler_error_before_response_is_500_and_keeps_connection() -> None:
    async def broken(ex: Exchange) -> None:
        raise RuntimeError("boom")

    _, out, closed = await feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", handler=Recorder(broken))
    assert [s for s, _ in responses(out)] == [500]
    assert not closed


@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"GET", 204), (b"GET", 304)])
async def test_bodyless_responses_carry_no_body_or_chunking(method: bytes, status: int) -> None:
    async def answer(ex: Exchange) -> None:
        ex.start_response(status, [], 5 if status != 204 else None)
        ex.write(b"hello")
        ex.end()

    raw = method + b" / HTTP/1.1\r\nHost: h\r\n\r\n"
    _, out, closed = await feed(raw, handler=Recorder(answer))
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b""
    assert b"Transfer-Encoding" not in head
    assert (b"Content-Length: 5" in head) == (status != 204)
    assert not closed


async def test_connection_cap_answers_503_and_closes() -> None:
    loop = asyncio.get_running_loop()
    limits = ServerLimits(max_connections=1)
    first, t1 = make_protocol(Recorder(), limits, loop)
    from proxy.http1 import HttpServerProtocol
    from tests.unit.engine_fakes import FakeTransport

    second = HttpServerProtocol(first.ctx)
    t2 = FakeTransport(second)
    second.connection_made(t2)
    assert [s for s, _ in responses(t2.data)] == [503]
    assert t2.closed and not t1.closed
    assert len(first.ctx.connections) == 1


# --------------------------------------------- memoised header checks (hot-path tables)


async def test_refused_names_and_hosts_are_refused_again_on_every_request() -> None:
    # Host verdicts and lower-case names are remembered between requests: a refused value
    # must be refused every time, not only on first sight.
    for _ in range(3):
        for raw in (BAD_FRAMING["E4-underscore"], BAD_FRAMING["F1-host-dotdot"]):
            _, out, closed = await feed(raw)
            assert [status for status, _ in responses(out)] == [400]
            assert closed


async def test_header_tables_stay_bounded_under_made_up_names_and_hosts() -> None:
    from proxy import headrules

    for i in range(5000):
        headrules.host_ok(b"h%d.example" % i)
        headers.lower_name(b"X-Made-Up-%d" % i)
    info = headrules.host_ok.cache_info()
    assert info.maxsize is not None and info.currsize <= info.maxsize < 5000
    assert len(headers.LOWER_NAMES) <= headers.LOWER_NAMES_MAX < 5000
    assert not headrules.host_ok(b"a/b") and headrules.host_ok(b"a.b:80")


async def test_a_refused_name_is_never_trusted_from_the_name_table() -> None:
    headers.lower_name(b"X_Sneaky")  # e.g. via Exchange.set_headers
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX_Sneaky: 1\r\n\r\n"
    _, out, closed = await feed(raw)
    assert [status for status, _ in responses(out)] == [400] and closed


async def test_names_follow_the_parsed_headers_case_insensitively() -> None:
    rec, out, _ = await feed(b"GET / HTTP/1.1\r\nHOST: h\r\nX-One: 1\r\nx-one: 2\r\n\r\n")
    assert [status for status, _ in responses(out)] == [200]
    (ex,) = rec.seen
    assert ex.names == [b"host", b"x-one", b"x-one"]
    assert ex.header(b"x-one") == b"1" and ex.header(b"x-two") is None
    ex.set_headers([(b"Via", b"1.1 a")])
    assert ex.names == [b"via"] and ex.header(b"via") == b"1.1 a"


async def test_b2_header_count_limit_is_exact() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(4))  # Host + 4 = the limit of 5
    rec, out, _ = await feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n", SMALL)
    assert [s for s, _ in responses(out)] == [200] and len(rec.seen) == 1
    fields += b"X-4: v\r\n"
    rec, out, closed = await feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n", SMALL)
    assert [s for s, _ in responses(out)] == [431] and closed and rec.seen == []


@pytest.mark.parametrize(
    ("version", "fields", "expected"),
    [
        (b"1.1", b"", ("1.1", True)),
        (b"1.1", b"Connection: close\r\n", ("1.1", False)),
        (b"1.0", b"", ("1.0", False)),
        (b"1.0", b"Connection: keep-alive\r\n", ("1.0", True)),
        (b"1.0", b"Proxy-Connection: keep-alive\r\n", ("1.0", True)),
        (b"1.0", b"Keep-Alive: 300\r\n", ("1.0", False)),
    ],
)
async def test_version_and_keep_alive_of_each_request(
    version: bytes, fields: bytes, expected: tuple[str, bool]
) -> None:
    # The version is inferred from keep-alive when no Connection header could explain it.
    rec, _, _ = await feed(b"GET / HTTP/" + version + b"\r\nHost: h\r\n" + fields + b"\r\n")
    (ex,) = rec.seen
    assert (ex.version, ex.keep_alive) == expected


def test_the_transition_table_is_enforced_in_tests() -> None:
    from proxy.http1 import CHECK_TRANSITIONS
    from proxy.states import TRANSITIONS, ConnState

    assert CHECK_TRANSITIONS
    assert TRANSITIONS[ConnState.CLOSED] == frozenset()
    assert all(ConnState.CLOSED in TRANSITIONS[s] for s in ConnState if s is not ConnState.CLOSED)


async def test_every_response_path_follows_the_response_table() -> None:
    # Each way a handler can answer, seen from the response's state after each call: every
    # step is one ``RESPONSE_TRANSITIONS`` allows, and a second start is refused.
    from proxy.errors import ProxyError
    from proxy.states import RESPONSE_TRANSITIONS, ResponseState

    Step = Callable[[Exchange], object]
    start: Step = lambda ex: ex.start_response(200, [])  # noqa: E731
    start5: Step = lambda ex: ex.start_response(200, [], 5)  # noqa: E731
    write: Step = lambda ex: ex.write(b"x")  # noqa: E731
    end: Step = lambda ex: ex.end()  # noqa: E731
    fail: Step = lambda ex: ex.fail(ProxyError("no"))  # noqa: E731
    abort: Step = lambda ex: ex.abort()  # noqa: E731
    paths: dict[str, list[Step]] = {
        "send": [lambda ex: ex.send(200, b"ok")],
        "stream": [start, write, end],
        "short": [start5, write, end],
        "fail-before": [fail],
        "fail-after": [start, fail],
        "abort-before": [abort],
        "end-twice": [lambda ex: ex.send(204), end, abort],
    }
    for name, steps in paths.items():
        seen: list[ResponseState] = []

        async def handler(
            ex: Exchange, steps: list[Step] = steps, seen: list[ResponseState] = seen
        ) -> None:
            seen.append(ex.response)
            for step in steps:
                step(ex)
                seen.append(ex.response)

        proto, _ = make_protocol(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle(proto)
        assert seen[0] is ResponseState.PENDING and seen[-1] is ResponseState.DONE, name
        for before, after in itertools.pairwise(seen):
            assert after is before or after in RESPONSE_TRANSITIONS[before], (name, seen)

    async def twice(ex: Exchange) -> None:
        ex.start_response(200, [])
        with pytest.raises(RuntimeError, match="already started"):
            ex.start_response(200, [])
        with pytest.raises(RuntimeError, match="already started"):
            ex.start_tunnel([], lambda _: None, lambda: None)
        ex.end()

    proto, transport = make_protocol(twice)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle(proto)
    assert responses(transport.data)[0][0] == 200
