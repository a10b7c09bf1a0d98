"""The upstream request head: what a proxied request looks like on its way to the upstream.

``build_request_head`` writes HTTP/1.1: hop-by-hop headers (and those a ``Connection``
header names) stripped, ``X-Forwarded-For`` appended, an absolute-form target turned into
origin form with its authority as Host, the component's ``Rewrite`` applied, and the framing
chosen by the proxy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from proxy.exchange import Exchange
from proxy.headers import HOP_BY_HOP, Header, HeaderList, connection_tokens
from proxy.headrules import split_absolute

__all__ = ["NO_REWRITE", "Rewrite", "build_request_head", "h2_request_fields"]

# Headers the proxy writes itself on the upstream request.
_NONE: frozenset[bytes] = frozenset()
_REQUEST_OWN = frozenset({b"host", b"x-forwarded-for", b"content-length", b"expect"})


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A component's edits to the upstream request, beyond the engine's own.

    ``remove`` holds lower-case names dropped from the client's request; ``set`` headers are
    written after it (replacing any client value, as Knative's ingress overwrites). ``host``
    replaces the Host header when given.
    """

    remove: frozenset[bytes] = frozenset()
    set: tuple[Header, ...] = ()
    host: bytes | None = None
    #: Every lower-case name ``build_request_head`` skips, computed once per rewrite.
    skip: frozenset[bytes] = field(init=False, repr=False, compare=False)
    #: ``skip`` but Host: a request with none of these names is copied as it came.
    edits: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = frozenset(name.lower() for name, _ in self.set)
        skip, edits = _skip_sets(self.remove, names)
        object.__setattr__(self, "skip", skip)
        object.__setattr__(self, "edits", edits)


@functools.lru_cache(maxsize=256)
def _skip_sets(
    remove: frozenset[bytes], set_names: frozenset[bytes]
) -> tuple[frozenset[bytes], frozenset[bytes]]:
    # Components build a Rewrite per request when a header value varies (K-Original-Host);
    # the names to skip do not vary, so the union is made once per combination.
    skip = HOP_BY_HOP | remove | set_names | _REQUEST_OWN
    return skip, skip - {b"host"}


NO_REWRITE = Rewrite()


def build_request_head(ex: Exchange, rewrite: Rewrite, default_host: bytes) -> bytes:
    """The upstream request head for ``ex`` (HTTP/1.1)."""
    headers = ex.headers
    names = ex.names
    host = rewrite.host
    target = ex.target
    if target[:1] != b"/" and (split := split_absolute(target)) is not None:
        # Absolute form (RFC 9112 3.2.2): its authority is the Host, as Go's server reads it.
        target, authority = split
        if host is None:
            host = authority
    xff: list[bytes] = []
    if host is None and rewrite.edits.isdisjoint(names) and b"host" in names:
        # Nothing to drop or replace (the common case): the client's fields go as they
        # came, Host in its place, joined in C rather than a Python loop per header.
        head = b"\r\n".join(map(b": ".join, headers))
        parts = [ex.method, b" ", target, b" HTTP/1.1\r\n", head, b"\r\n"]
    else:
        parts = [ex.method, b" ", target, b" HTTP/1.1\r\n"]
        skip = rewrite.skip
        # Fields the client names in Connection are gone before the proxy adds its own: a
        # named X-Forwarded-For must not survive as the prefix of the one appended below.
        named = connection_tokens(headers) if b"connection" in names else _NONE
        if named:
            skip = skip | named
        # Indexed, not zip(): zip(strict=True) costs ~50 ns per header here.
        for i, low in enumerate(names):
            name, value = headers[i]
            if low in skip:
                if low == b"host":
                    if host is None:
                        host = value
                elif low == b"x-forwarded-for" and low not in named:
                    xff.append(value)
                continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"Host: ", host if host is not None else default_host, b"\r\n")
    for name, value in rewrite.set:
        parts += (name, b": ", value, b"\r\n")
    if ex.peer:
        xff.append(ex.peer.encode())
    if xff:
        parts += (b"X-Forwarded-For: ", b", ".join(xff), b"\r\n")
    if ex.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif ex.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % ex.content_length)
    if ex.upgrade:
        upgrade = ex.header(b"upgrade")
        if upgrade is not None:
            parts += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def h2_request_fields(ex: Exchange, rewrite: Rewrite, default_host: bytes) -> HeaderList:
    """The upstream request for ``ex`` as an HTTP/2 header list: the same edits as
    ``build_request_head`` (hop-by-hop and Connection-named fields dropped, the rewrite,
    ``X-Forwarded-For``), with Host as ``:authority``, names lower-case, and ``te:
    trailers`` kept (gRPC servers require it; it is the only TE HTTP/2 allows)."""
    host = rewrite.host
    target = ex.target
    if target[:1] != b"/" and (split := split_absolute(target)) is not None:
        # Absolute form (RFC 9112 3.2.2): its authority is the Host, as Go's server reads it.
        target, authority = split
        if host is None:
            host = authority
    skip = rewrite.skip
    named = connection_tokens(ex.headers) if b"connection" in ex.names else _NONE
    fields: HeaderList = []
    xff: list[bytes] = []
    te_trailers = False
    for (_, value), low in zip(ex.headers, ex.names, strict=True):
        if low in skip or low in named:
            if low == b"host" and host is None:
                host = value
            elif low == b"x-forwarded-for" and low not in named:
                xff.append(value)
            elif low == b"te" and value.strip().lower() == b"trailers":
                te_trailers = True
            continue
        fields.append((low, value))
    head: HeaderList = [
        (b":method", ex.method),
        (b":scheme", b"http"),
        (b":authority", host if host is not None else default_host),
        (b":path", target),
    ]
    if te_trailers:
        head.append((b"te", b"trailers"))
    fields += [(name.lower(), value) for name, value in rewrite.set]
    if ex.peer:
        xff.append(ex.peer.encode())
    if xff:
        fields.append((b"x-forwarded-for", b", ".join(xff)))
    if ex.content_length is not None:
        fields.append((b"content-length", b"%d" % ex.content_length))
    return head + fields
