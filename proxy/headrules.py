"""The request-head rules llhttp leaves to us, as pure functions returning a value.

llhttp has parsed the request line and the fields; what it does not check is checked here:
the HTTP version, the Host header (count and characters), the framing headers
(Transfer-Encoding and Content-Length, alone and together), ``Expect``, and the size limits
of ``ServerLimits``. A head that breaks a rule raises the ``ProxyError`` to answer it with;
one that passes gives its ``Framing``. Nothing here touches a connection or an exchange; the
one edit is Go's: a Host value's trailing whitespace is trimmed in the header list.
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
    VersionNotSupported,
)
from proxy.headers import HeaderList
from proxy.limits import ServerLimits

__all__ = [
    "PLAIN",
    "Framing",
    "check_head",
    "check_header_sizes",
    "coding_refusal",
    "host_ok",
    "split_absolute",
]


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


def _trim_host(headers: HeaderList, i: int) -> None:
    """``headers[i]`` is a Host value ``host_ok`` refused: trimmed in place if its only fault
    is trailing whitespace, as Go trims every field value (``Host: name `` is ``name``),
    else ``BadRequest``. Called only then: the check itself stays inline (hot path)."""
    name, value = headers[i]
    trimmed = value.rstrip(b" \t")
    if trimmed == value or not host_ok(trimmed):
        raise BadRequest("invalid Host header")
    headers[i] = (name, trimmed)


def split_absolute(target: bytes) -> tuple[bytes, bytes] | None:
    """An absolute-form target (``http://a.example/p?q``) as (origin form, authority), as
    RFC 9112 section 3.2.2 reads it: the authority replaces the Host header; None for any
    other form. Raises ``BadRequest`` for an absolute target without a valid authority."""
    if target[:7].lower() not in (b"http://", b"https:/") or b"//" not in target[:8]:
        return None
    rest = target.split(b"//", 1)[1]
    end = len(rest)
    for sep in (b"/", b"?"):
        at = rest.find(sep)
        if 0 <= at < end:
            end = at
    authority, path = rest[:end], rest[end:]
    if not authority or b"@" in authority or not host_ok(authority):
        raise BadRequest("invalid authority in the request target")
    return (path if path[:1] == b"/" else b"/" + path), authority


def coding_refusal(te_values: list[bytes]) -> NotImplementedCoding | None:
    """Go's answer to a request's Transfer-Encoding values (one per header line): 501 for
    anything but one line saying exactly ``chunked`` (two lines, ``gzip, chunked``,
    ``identity``, ``chunked, chunked``); None when it is that one coding."""
    if len(te_values) > 1:
        return NotImplementedCoding("more than one Transfer-Encoding header")
    if te_values[0].strip().lower() != b"chunked":
        return NotImplementedCoding("unsupported Transfer-Encoding")
    return None


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
        if version[:1] not in ("0", "1"):
            raise VersionNotSupported(f"unsupported HTTP version {version}")  # Go: 505
        raise BadRequest(f"unsupported HTTP version {version}")
    if _HOST_ONLY.issuperset(_CHECKED_NAMES.intersection(names)):
        # The common case, found in C: Host is the only field to check, if present.
        hosts = names.count(b"host")
        if hosts == 1:
            i = names.index(b"host")
            if not host_ok(headers[i][1]):
                _trim_host(headers, i)
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
                _trim_host(headers, i)
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
        refusal = coding_refusal(te_values)
        if refusal is not None:
            raise refusal
        if cl_values:
            raise BadRequest("both Transfer-Encoding and Content-Length")
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
