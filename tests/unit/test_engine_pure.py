"""The engine's pure pieces: hop-by-hop rules, request heads, response filtering, limits, errors."""

from __future__ import annotations

import pytest

from proxy import errors
from proxy.forward import Rewrite, build_request_head
from proxy.headers import connection_tokens
from proxy.http1 import Exchange, parser_is_compiled, status_line
from proxy.limits import ServerLimits
from tests.unit.engine_fakes import make_protocol

H = list[tuple[bytes, bytes]]


# ------------------------------------------------------------------------ A11: parser


def test_parser_is_the_compiled_llhttp_extension() -> None:
    assert parser_is_compiled()


# ----------------------------------------------------------------------- headers.py


def test_connection_tokens_are_lowercased_and_merged_over_lines() -> None:
    headers: H = [(b"Connection", b"Close, X-Secret"), (b"connection", b" keep-alive ,,X-Two")]
    assert connection_tokens(headers) == {b"close", b"x-secret", b"keep-alive", b"x-two"}


# ------------------------------------------------------------- build_request_head (E1/E3)


async def _exchange(headers: H, *, method: bytes = b"GET", peer: str = "10.1.2.3") -> Exchange:
    proto, _ = make_protocol()
    ex = Exchange(proto)
    ex.method = method
    ex.target = b"/p?q=1"
    ex.set_headers(headers)
    ex.peer = peer
    return ex


def _head_lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


async def test_request_head_strips_hop_by_hop_and_connection_named_headers() -> None:
    ex = await _exchange(
        [
            (b"Host", b"svc"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"300"),
            (b"Proxy-Connection", b"x"),
            (b"TE", b"trailers"),
            (b"X-Secret", b"s"),
            (b"Proxy-Authorization", b"Basic abc"),
            (b"Accept", b"*/*"),
        ]
    )
    lines = _head_lines(build_request_head(ex, Rewrite(), b"up:80"))
    assert lines == [
        b"GET /p?q=1 HTTP/1.1",
        b"Accept: */*",
        b"Host: svc",
        b"X-Forwarded-For: 10.1.2.3",
    ]


async def test_request_head_appends_peer_to_spoofed_xff_keeping_client_values_left() -> None:
    ex = await _exchange(
        [(b"Host", b"svc"), (b"X-Forwarded-For", b"1.2.3.4"), (b"x-forwarded-for", b"5.6.7.8")]
    )
    lines = _head_lines(build_request_head(ex, Rewrite(), b"up:80"))
    assert lines.count(b"X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.1.2.3") == 1
    assert sum(1 for line in lines if line.lower().startswith(b"x-forwarded-for")) == 1


async def test_request_head_uses_default_host_when_client_sent_none() -> None:
    ex = await _exchange([], peer="")
    ex.version = "1.0"
    assert _head_lines(build_request_head(ex, Rewrite(), b"up:81")) == [
        b"GET /p?q=1 HTTP/1.1",
        b"Host: up:81",
    ]


async def test_request_head_frames_body_itself() -> None:
    ex = await _exchange([(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")], method=b"POST")
    ex.chunked = True
    lines = _head_lines(build_request_head(ex, Rewrite(), b"u"))
    assert b"Transfer-Encoding: chunked" in lines
    assert not any(line.lower().startswith(b"content-length") for line in lines)
    ex2 = await _exchange(
        [(b"Host", b"h"), (b"Content-Length", b"5"), (b"Expect", b"100-continue")]
    )
    ex2.content_length = 5
    lines2 = _head_lines(build_request_head(ex2, Rewrite(), b"u"))
    assert b"Content-Length: 5" in lines2
    assert not any(line.lower().startswith(b"transfer-encoding") for line in lines2)
    assert not any(line.lower().startswith(b"expect") for line in lines2)


async def test_request_head_applies_rewrite_remove_set_and_host() -> None:
    ex = await _exchange(
        [(b"Host", b"client"), (b"K-Internal", b"evil"), (b"X-Set", b"client"), (b"A", b"1")]
    )
    rewrite = Rewrite(
        remove=frozenset({b"k-internal"}), set=((b"X-Set", b"ours"),), host=b"override"
    )
    lines = _head_lines(build_request_head(ex, rewrite, b"u"))
    assert lines == [
        b"GET /p?q=1 HTTP/1.1",
        b"A: 1",
        b"Host: override",
        b"X-Set: ours",
        b"X-Forwarded-For: 10.1.2.3",
    ]


async def test_request_head_carries_upgrade_only_for_upgrade_requests() -> None:
    headers: H = [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    ex = await _exchange(headers)
    ex.upgrade = True
    lines = _head_lines(build_request_head(ex, Rewrite(), b"u"))
    assert lines[-2:] == [b"Connection: Upgrade", b"Upgrade: websocket"]
    ex.upgrade = False
    lines = _head_lines(build_request_head(ex, Rewrite(), b"u"))
    assert not any(b"pgrade" in line for line in lines)


def test_status_line_for_unknown_status() -> None:
    assert status_line(299) == b"HTTP/1.1 299 Unknown\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"


# ------------------------------------------------------------------------- ServerLimits


@pytest.mark.parametrize(
    "field",
    [
        "max_request_line",
        "max_header_bytes",
        "max_total_header_bytes",
        "max_header_count",
        "max_connections",
        "body_high_water",
        "head_timeout",
        "body_idle_timeout",
        "keepalive_timeout",
    ],
)
def test_limits_refuse_non_positive_values_naming_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=f"ServerLimits.{field}"):
        ServerLimits(**{field: 0})  # type: ignore[arg-type]


def test_limits_body_limit_may_be_zero_or_none_but_not_negative() -> None:
    assert ServerLimits(max_body_bytes=0).max_body_bytes == 0
    assert ServerLimits().max_body_bytes is None
    with pytest.raises(ValueError, match="max_body_bytes"):
        ServerLimits(max_body_bytes=-1)


def test_limits_are_frozen() -> None:
    limits = ServerLimits()
    with pytest.raises(AttributeError):
        limits.head_timeout = 1  # type: ignore[misc]


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("error", "status", "close", "body"),
    [
        (errors.BadRequest("bad"), 400, True, b"bad\n"),
        (errors.NotFound("nf"), 404, False, b"nf\n"),
        (errors.ExpectationFailed("e"), 417, True, b"e\n"),
        (errors.PayloadTooLarge("big"), 413, True, b"big\n"),
        (errors.UriTooLong("u"), 414, True, b"u\n"),
        (errors.HeadersTooLarge("h"), 431, True, b"h\n"),
        (errors.NotImplementedCoding("c"), 501, True, b"c\n"),
        (errors.BadGateway("dial tcp: refused"), 502, False, b"dial tcp: refused\n"),
        (errors.QueueFull(), 503, False, b"pending request queue full\n"),
        (errors.GatewayTimeout(), 504, False, b"request timeout"),
        (errors.ProxyError("x"), 500, False, b"x\n"),
    ],
)
def test_errors_map_to_status_close_and_body(
    error: errors.ProxyError, status: int, close: bool, body: bytes
) -> None:
    assert (error.status, error.close, error.body()) == (status, close, body)


def test_reason_phrases() -> None:
    assert errors.reason_phrase(431) == b"Request Header Fields Too Large"
    assert errors.reason_phrase(599) == b"Unknown"
