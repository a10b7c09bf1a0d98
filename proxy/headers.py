"""Header lists as the engine carries them, and the hop-by-hop rules of RFC 9110 §7.6.1.

Headers travel as a list of ``(name, value)`` byte pairs exactly as the peer sent them (case
and order kept). Lookups compare names case-insensitively. Nothing here allocates per header
on the hot path beyond one ``lower()`` of each name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Header = tuple[bytes, bytes]
HeaderList = list[Header]

# Never forwarded, in either direction. ``Connection`` additionally names more of them.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def get(headers: Sequence[Header], name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def get_all(headers: Sequence[Header], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


def connection_tokens(headers: Sequence[Header]) -> set[bytes]:
    """Lower-case tokens of every ``Connection`` header (``close``, ``upgrade``, names...)."""
    tokens: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    tokens.add(token)
    return tokens


def strip_hop_by_hop(
    headers: Iterable[Header], extra: frozenset[bytes] | set[bytes] = frozenset()
) -> HeaderList:
    """Copy of ``headers`` without hop-by-hop ones, those named in ``Connection``, and ``extra``.

    ``extra`` holds lower-case names the caller wants dropped as well (internal headers).
    """
    headers = list(headers)
    named = connection_tokens(headers)
    out: HeaderList = []
    for key, value in headers:
        low = key.lower()
        if low in HOP_BY_HOP or low in named or low in extra:
            continue
        out.append((key, value))
    return out


def encode_head(first_line: bytes, headers: Iterable[Header]) -> bytes:
    """Serialise a message head: the first line, each header, and the blank line."""
    parts = [first_line, b"\r\n"]
    for key, value in headers:
        parts += (key, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
