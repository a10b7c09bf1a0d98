"""The lifecycle states of the engine's connections, with the transitions each allows.

h11 keeps a connection's states the same way: an enum, and a table of which state may follow
which, in one place. ``ConnState`` is a client connection's (``proxy.http1``), changed only
by ``HttpServerProtocol._to``; ``UpstreamState`` an upstream connection's
(``proxy.client``), changed only by ``UpstreamConnection._to``. Both are ``IntEnum``: a
plain ``Enum`` hashes its members in Python, which a table lookup would pay on every
request.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "ConnState"]


class ConnState(enum.IntEnum):
    """Where a client connection is in its life.

    IDLE between requests; HEAD while a request head is being read; BUSY while an exchange
    runs; LAST when no request will be read after those already parsed (a non-keep-alive
    request, the client's FIN, an upgrade, an error); TUNNEL once a 101 switched the
    connection to bytes; CLOSED at the end.
    """

    IDLE = 0
    HEAD = 1
    BUSY = 2
    LAST = 3
    TUNNEL = 4
    CLOSED = 5


_IDLE, _HEAD, _BUSY, _LAST, _TUNNEL, _CLOSED = ConnState

#: Which state may follow which (``HttpServerProtocol._to``). Every state may close; none
#: follows CLOSED.
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    _IDLE: frozenset({_HEAD, _BUSY, _LAST, _CLOSED}),
    _HEAD: frozenset({_HEAD, _BUSY, _LAST, _CLOSED}),
    _BUSY: frozenset({_IDLE, _HEAD, _BUSY, _LAST, _TUNNEL, _CLOSED}),
    _LAST: frozenset({_LAST, _TUNNEL, _CLOSED}),
    _TUNNEL: frozenset({_CLOSED}),
    _CLOSED: frozenset(),
}
