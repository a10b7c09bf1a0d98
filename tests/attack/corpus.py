"""Request-smuggling byte streams: seeds for the differential fuzzer, and regression cases.

Each stream is what a hostile client might send on one connection. The families are the
ones the hardening attack used (issue 15): CL.TE and TE.CL, obfuscated Transfer-Encoding,
malformed Content-Length, chunk framing, line endings, folding and control bytes, versions
and targets, expectations, upgrades, trailers and pipelining. ``SMUGGLED`` marks a request
that must never be seen as a request of its own.
"""

from __future__ import annotations

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


def _post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n" + body


_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"

CORPUS: dict[str, bytes] = {
    # CL.TE / TE.CL
    "cl-te": _post(b"Content-Length: 6\r\n" + _TE_CHUNKED, b"0\r\n\r\nX"),
    "te-cl": _post(_TE_CHUNKED + b"Content-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"),
    "cl-te-hidden": _post(b"Content-Length: 4\r\n" + _TE_CHUNKED, b"0\r\n\r\n" + SMUGGLED),
    "te-cl-hidden": _post(_TE_CHUNKED + b"Content-Length: 40\r\n", b"0\r\n\r\n" + SMUGGLED),
    # Transfer-Encoding obfuscations
    "te-space-before-colon": _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "te-tab": _post(b"Transfer-Encoding:\tchunked\r\n", b"0\r\n\r\n"),
    "te-xchunked": _post(b"Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n", b"abc"),
    "te-chunked-x": _post(b"Transfer-Encoding: chunked-x\r\n", b"0\r\n\r\n"),
    "te-vtab": _post(b"Transfer-Encoding: chunked\x0b\r\n", b"0\r\n\r\n"),
    "te-case": _post(b"transfer-encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
    "te-two-lines": _post(_TE_CHUNKED + b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"),
    "te-identity-chunked": _post(b"Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n"),
    "te-chunked-gzip": _post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    "te-comma": _post(b"Transfer-Encoding: ,chunked\r\n", b"0\r\n\r\n"),
    "te-quoted": _post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"),
    "te-obs-fold": _post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "te-http10": b"POST /x HTTP/1.0\r\nHost: h\r\n" + _TE_CHUNKED + b"\r\n0\r\n\r\n" + SMUGGLED,
    "te-nul": _post(b"Transfer-Encoding: chunked\x00\r\n", b"0\r\n\r\n"),
    # Content-Length
    "cl-two-same": _post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
    "cl-two-different": _post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"),
    "cl-list": _post(b"Content-Length: 3, 3\r\n", b"abc"),
    "cl-plus": _post(b"Content-Length: +3\r\n", b"abc"),
    "cl-minus": _post(b"Content-Length: -1\r\n", b""),
    "cl-space-inside": _post(b"Content-Length: 1 0\r\n", b"0123456789"),
    "cl-leading-zeros": _post(b"Content-Length: 003\r\n", b"abc" + SMUGGLED),
    "cl-hex": _post(b"Content-Length: 0x3\r\n", b"abc"),
    "cl-huge": _post(b"Content-Length: 100000000000000000000000\r\n", b"x"),
    "cl-short-body-then-request": _post(b"Content-Length: 1\r\n", b"a" + SMUGGLED),
    "cl-in-get": b"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 36\r\n\r\n" + SMUGGLED,
    # chunk framing
    "chunk-0x": _post(_TE_CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk-negative": _post(_TE_CHUNKED, b"-1\r\nhello\r\n0\r\n\r\n"),
    "chunk-overflow": _post(_TE_CHUNKED, b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
    "chunk-longer": _post(_TE_CHUNKED, b"3\r\nhello\r\n0\r\n\r\n"),
    "chunk-ext": _post(_TE_CHUNKED, b"5;a=b\r\nhello\r\n0\r\n\r\n"),
    "chunk-ext-lf": _post(_TE_CHUNKED, b"5;a=b\nc\r\nhello\r\n0\r\n\r\n"),
    "chunk-space": _post(_TE_CHUNKED, b"5 \r\nhello\r\n0\r\n\r\n"),
    "chunk-bare-lf": _post(_TE_CHUNKED, b"5\nhello\n0\n\n"),
    "chunk-missing-crlf": _post(_TE_CHUNKED, b"5\r\nhelloX0\r\n\r\n"),
    "chunk-trailer-cl": _post(_TE_CHUNKED, b"0\r\nContent-Length: 36\r\n\r\n" + SMUGGLED),
    "chunk-trailer-bad": _post(_TE_CHUNKED, b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"),
    "chunk-then-request": _post(_TE_CHUNKED, b"3\r\nabc\r\n0\r\n\r\n" + SMUGGLED),
    # line endings, folding, control bytes
    "bare-lf-head": b"GET /x HTTP/1.1\nHost: h\n\n" + SMUGGLED,
    "bare-cr": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
    "obs-fold": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  continued\r\n\r\n",
    "nul-value": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
    "space-in-name": b"GET /x HTTP/1.1\r\nHost: h\r\nX A: a\r\n\r\n",
    "no-colon": b"GET /x HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
    "underscore-name": b"GET /x HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
    "leading-space-line": b"GET /x HTTP/1.1\r\n Host: h\r\n\r\n",
    "empty-name": b"GET /x HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n",
    # versions, methods, targets, Host
    "http09": b"GET /\r\n\r\n",
    "http12": b"GET /x HTTP/1.2\r\nHost: h\r\n\r\n",
    "http20": b"GET /x HTTP/2.0\r\nHost: h\r\n\r\n",
    "lowercase-version": b"GET /x http/1.1\r\nHost: h\r\n\r\n",
    "bad-method": b"G(T /x HTTP/1.1\r\nHost: h\r\n\r\n",
    "absolute-form": b"GET http://other.example/x HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLED,
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "connect": b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n" + SMUGGLED,
    "no-host": b"GET /x HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "host-slash": b"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "host-trailing-space": b"GET /x HTTP/1.1\r\nHost: h \r\n\r\n",
    "space-in-target": b"GET /x y HTTP/1.1\r\nHost: h\r\n\r\n",
    # expectations, upgrades
    "expect-continue": _post(b"Expect: 100-continue\r\nContent-Length: 3\r\n", b"abc"),
    "expect-other": _post(b"Expect: something\r\nContent-Length: 3\r\n", b"abc"),
    "upgrade-body": _post(
        b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n", b"abc" + SMUGGLED
    ),
    "upgrade-ws": b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"\r\n" + SMUGGLED,
    # pipelining and connection state
    "pipeline-3": b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" * 3,
    "close-then-request": b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + SMUGGLED,
    "http10-then-request": b"GET /a HTTP/1.0\r\n\r\n" + SMUGGLED,
    "http10-keepalive": b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + SMUGGLED,
    "head-with-body": b"HEAD /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" + SMUGGLED,
}
