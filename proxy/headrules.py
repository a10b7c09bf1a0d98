"""The request-head rules llhttp leaves to us, as pure functions returning a value.

llhttp has parsed the request line and the fields; what it does not check is checked here:
the HTTP version, the Host header (count and characters), the framing headers
(Transfer-Encoding and Content-Length, alone and together), ``Expect``, and the size limits
of ``ServerLimits``. A head that breaks a rule raises the ``ProxyError`` to answer it with;
one that passes gives its ``Framing``. Nothing here touches a connection or an exchange.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import httptools

from proxy.errors import (
    BadRequest,
    ExpectationFailed,
    HeadersTooLarge,
    NotImplementedCoding,
    PayloadTooLarge,
)
from proxy.headers import HeaderList
from proxy.limits import ServerLimits

__all__ = ["PLAIN", "Framing", "check_head", "check_header_sizes", "host_ok"]


@dataclass(frozen=True, slots=True)
class Framing:
    """How a valid request's body is framed, and whether it asked for ``100 Continue``."""

    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False


#: The framing of a request with no body headers and no expectation: the common case, shared.
PLAIN = Framing()

# Characters nginx refuses in Host (http_host.t), control bytes, and "..".
_BAD_HOST = re.compile(rb"[/\\@\s\x00-\x1f\x7f]|\.\.")


# A regex search costs ~3,500 instructions per request and clients send the same few hosts:
# verdicts on the hosts seen lately are kept.
@functools.lru_cache(maxsize=1024)
def host_ok(value: bytes) -> bool:
    """Whether ``value`` is an acceptable Host header value."""
    return _BAD_HOST.search(value) is None


def check_header_sizes(headers: HeaderList, max_field: int, max_total: int) -> None:
    """Each field (name, value and four bytes of framing) and their sum within bounds."""
    total = 0
    for name, value in headers:
        size = len(name) + len(value) + 4
        total += size
        if size > max_field or total > max_total:
            raise HeadersTooLarge("request header fields too large")


_CHECKED_NAMES = frozenset({b"host", b"expect", b"content-length", b"transfer-encoding"})
_HOST_ONLY = frozenset({b"host"})


def check_head(
    headers: HeaderList, names: list[bytes], version: str, limits: ServerLimits
) -> Framing:
    """The framing of a request head (``names`` are ``headers``' lower-case names), or the
    ``ProxyError`` that answers it: version, Host, framing headers, expectations, size."""
    if len(headers) > limits.max_header_count:
        raise HeadersTooLarge("too many request header fields")
    if version not in ("1.1", "1.0"):
        raise BadRequest(f"unsupported HTTP version {version}")
    if _HOST_ONLY.issuperset(_CHECKED_NAMES.intersection(names)):
        # The common case, found in C: Host is the only field to check, if present.
        hosts = names.count(b"host")
        if hosts == 1:
            if not host_ok(headers[names.index(b"host")][1]):
                raise BadRequest("invalid Host header")
            return PLAIN
        if hosts > 1:
            raise BadRequest("more than one Host header")
        if version == "1.1":
            raise BadRequest("missing Host header")
        return PLAIN
    hosts = 0
    expect_continue = False
    te_values: list[bytes] = []
    cl_values: list[bytes] = []
    for i, low in enumerate(names):
        if low not in _CHECKED_NAMES:
            continue
        value = headers[i][1]
        if low == b"host":
            hosts += 1
            if not host_ok(value):
                raise BadRequest("invalid Host header")
        elif low == b"transfer-encoding":
            te_values.append(value)
        elif low == b"content-length":
            cl_values.append(value)
        elif low == b"expect":
            if value.strip().lower() == b"100-continue":
                expect_continue = version == "1.1"
            else:
                raise ExpectationFailed("unsupported expectation")
    if hosts > 1:
        raise BadRequest("more than one Host header")
    if hosts == 0 and version == "1.1":
        raise BadRequest("missing Host header")
    if te_values:
        if version == "1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if cl_values:
            raise BadRequest("both Transfer-Encoding and Content-Length")
        if len(te_values) > 1:
            raise BadRequest("more than one Transfer-Encoding header")
        codings = [c.strip().lower() for c in te_values[0].split(b",")]
        if codings != [b"chunked"]:
            if b"chunked" in codings:
                raise BadRequest("invalid Transfer-Encoding")
            raise NotImplementedCoding("unsupported Transfer-Encoding")
        return Framing(chunked=True, expect_continue=expect_continue)
    if cl_values:
        if len(cl_values) > 1:
            raise BadRequest("more than one Content-Length")
        raw = cl_values[0].strip()
        if not raw.isdigit() or len(raw) > 18:
            raise BadRequest("invalid Content-Length")
        length = int(raw)
        if limits.max_body_bytes is not None and length > limits.max_body_bytes:
            raise PayloadTooLarge("request body too large")
        return Framing(content_length=length, expect_continue=expect_continue)
    return Framing(expect_continue=expect_continue) if expect_continue else PLAIN


def parser_is_compiled() -> bool:
    """True when httptools' parser is the compiled llhttp extension (it has no other kind):
    every rule here assumes llhttp's own checks ran first."""
    module = type(httptools.HttpRequestParser(object())).__module__
    origin = getattr(__import__(module, fromlist=["_"]), "__file__", "") or ""
    return origin.endswith((".so", ".pyd"))
