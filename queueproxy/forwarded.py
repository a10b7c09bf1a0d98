"""The ``Forwarded`` shim: derive an RFC 7239 header from the ``X-Forwarded-*`` family.

Knative adds this so that apps reading only ``Forwarded`` still learn the client and the
original host and scheme. It runs before the proxy appends the peer to
``X-Forwarded-For``, so only what the previous hops sent is translated.
"""

from __future__ import annotations

from collections.abc import Sequence

_FORWARDED = b"forwarded"
_XFF = b"x-forwarded-for"
_XFP = b"x-forwarded-proto"
_XFH = b"x-forwarded-host"


def forwarded_value(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """Return the ``Forwarded`` value to add to a request, or ``None`` to add nothing.

    ``headers`` are (name, value) pairs as received; names compare case-insensitively.
    Nothing is added when a ``Forwarded`` header is already present or when the first
    ``X-Forwarded-For``, ``-Proto`` and ``-Host`` values are all empty. Only the first
    occurrence of each header counts (later lines are ignored, as Go's ``Header.Get``
    does). ``X-Forwarded-For`` is split on commas; an element containing ``:`` (IPv6,
    or IPv4 with a port) is written as ``"[elem]"``. Parts join with ``;`` and
    elements with ``, ``, a separator being written only after something else, so an
    empty first element leaves no ``for=`` behind (``,,,`` gives ``for=, for=, for=``).
    """
    xff = xfp = xfh = None
    for name, value in headers:
        lname = name.lower()
        if lname == _FORWARDED:
            return None
        if lname == _XFF:
            if xff is None:
                xff = value
        elif lname == _XFP:
            if xfp is None:
                xfp = value
        elif lname == _XFH and xfh is None:
            xfh = value
    if not xff and not xfp and not xfh:
        return None

    out = bytearray()
    nodes = xff.split(b",") if xff else []
    if nodes:
        first = nodes[0].strip()
        if first:
            out += b"for=" + _node(first)
    if xfh:
        out += (b";" if out else b"") + b"host=" + xfh
    if xfp:
        out += (b";" if out else b"") + b"proto=" + xfp
    for node in nodes[1:]:
        out += (b", " if out else b"") + b"for=" + _node(node.strip())
    return bytes(out)


def _node(elem: bytes) -> bytes:
    # A colon makes the node an obfuscated-looking token to RFC 7239 parsers unless
    # bracketed and quoted; IPv4 with a port is caught as well, as Knative does.
    return b'"[' + elem + b']"' if b":" in elem else elem
