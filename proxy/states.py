"""The lifecycle states of the engine's connections, with the transitions each allows.

h11 keeps a connection's states the same way: an enum, and a table of which state may follow
which, in one place. ``ConnState`` is a client connection's (``proxy.http1``), changed only
by ``HttpServerProtocol._to``; ``UpstreamState`` an upstream connection's
(``proxy.client``), changed only by ``UpstreamConnection._to``; ``ResponseState`` an
exchange's response side (``proxy.exchange``). All are ``IntEnum``: a
plain ``Enum`` hashes its members in Python, which a table lookup would pay on every
request.
"""

from __future__ import annotations

import enum

__all__ = [
    "RESPONSE_TRANSITIONS",
    "TRANSITIONS",
    "UPSTREAM_TRANSITIONS",
    "ConnState",
    "ResponseState",
    "UpstreamState",
]


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


class UpstreamState(enum.IntEnum):
    """Where an upstream connection is in the exchange it carries (ordered: a state from
    BODY on means the response head was passed on).

    IDLE between exchanges (pooled, or just dialed); WAITING once a request was sent, until
    the final response head; INTERIM while a 1xx interim response is parsed; SWITCHING from
    a 101 until the upgrade is taken; BODY from the final head to the end of the response;
    TUNNEL once a 101 made the connection a byte tunnel (it never carries an exchange again).
    Whether the transport is closed is the connection's ``closed``, beside the state.
    """

    IDLE = 0
    WAITING = 1
    INTERIM = 2
    SWITCHING = 3
    BODY = 4
    TUNNEL = 5


_U_IDLE, _U_WAITING, _U_INTERIM, _U_SWITCHING, _U_BODY, _U_TUNNEL = UpstreamState

#: Which state may follow which (``UpstreamConnection._to``).
UPSTREAM_TRANSITIONS: dict[UpstreamState, frozenset[UpstreamState]] = {
    _U_IDLE: frozenset({_U_WAITING}),
    _U_WAITING: frozenset({_U_INTERIM, _U_SWITCHING, _U_BODY}),
    _U_INTERIM: frozenset({_U_WAITING}),
    _U_SWITCHING: frozenset({_U_TUNNEL}),
    _U_BODY: frozenset({_U_IDLE}),
    _U_TUNNEL: frozenset(),
}


class ResponseState(enum.IntEnum):
    """Where an exchange's response is (ordered: a state from HEAD on means a status line
    went out, or is held back to go out with the first body bytes).

    PENDING until the handler starts the response; HEAD from the status line (or a 101 that
    made the connection a tunnel) until the end; DONE once it ended, was cut or failed:
    nothing more is written.
    """

    PENDING = 0
    HEAD = 1
    DONE = 2


_R_PENDING, _R_HEAD, _R_DONE = ResponseState

#: Which state may follow which (``Exchange``): a response may be cut before it started
#: (the client left), never restarted.
RESPONSE_TRANSITIONS: dict[ResponseState, frozenset[ResponseState]] = {
    _R_PENDING: frozenset({_R_HEAD, _R_DONE}),
    _R_HEAD: frozenset({_R_DONE}),
    _R_DONE: frozenset(),
}
