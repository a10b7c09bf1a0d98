"""Header lists as the engine carries them, and the hop-by-hop rules of RFC 9110 §7.6.1.

Headers travel as a list of ``(name, value)`` byte pairs exactly as the peer sent them (case
and order kept). Lookups compare names case-insensitively. Nothing here allocates per header
on the hot path beyond one ``lower()`` of each name.
"""

from __future__ import annotations

from collections.abc import Sequence

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


# ``b"_" in name`` costs a raised and cleared TypeError inside CPython 3.11 (bytes first tries
# the operand as an integer): ~1,800 instructions per header. The byte value takes memchr.
UNDERSCORE = ord("_")

#: Lower-case form of header names seen lately, keyed by the name as received: peers send
#: the same few dozen names over and over, and every pass over a message's headers then
#: compares the same objects, whose hashes are computed once. A full table is emptied, which
#: bounds it against made-up names. Hand-written rather than ``functools.lru_cache`` because
#: the parsers' ``on_header`` read it inline: a call per header measured ~4 % more
#: instructions per request (``python -m bench.instructions``). Names with an underscore
#: never enter it (the server refuses them and trusts the table to hold none).
LOWER_NAMES: dict[bytes, bytes] = {}
LOWER_NAMES_MAX = 4096
#: ``LOWER_NAMES.get``, bound once for the parsers. In CPython 3.11 a method called on a name
#: brought in by ``from ... import`` compiles to LOAD_ATTR, which makes a bound method on
#: every call (~400 instructions per header here); a bound function is one global load.
cached_lower = LOWER_NAMES.get


def lower_name(name: bytes) -> bytes:
    """``name.lower()``, one shared object per name seen lately."""
    low = LOWER_NAMES.get(name)
    if low is None:
        low = name.lower()
        if UNDERSCORE not in name:
            if len(LOWER_NAMES) >= LOWER_NAMES_MAX:
                LOWER_NAMES.clear()
            LOWER_NAMES[name] = low
    return low


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
