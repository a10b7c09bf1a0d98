"""The upstream side of the engine: one keep-alive connection to an upstream.

Theory of operation
-------------------
An ``UpstreamConnection`` carries one request at a time. The caller writes the request head
and body itself, and the connection pushes the parsed response into a ``ResponseSink``
synchronously from llhttp's callbacks: the head (so the client sees it in the same loop
iteration), each body chunk, then completion. Back-pressure goes the other way through
``pause_reading``/``resume_reading``. Where the exchange is is one ``UpstreamState``
(``proxy.states``), changed by ``_to`` (or inline after its check); the outcome goes to
one callback, once.

A connection goes back to its pool (``proxy.pool``) only when the exchange ended cleanly: the
whole response was read, the server did not ask to close, the whole request body was sent
and nothing failed. Anything else closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools

from proxy.errors import BadGateway
from proxy.headers import HOP_BY_HOP, HeaderList, cached_lower, connection_tokens, lower_name
from proxy.request_head import build_request_head
from proxy.states import UPSTREAM_TRANSITIONS, UpstreamState
from proxy.upstream import NotProcessed, ResponseSink, Upstream, UpstreamClosed

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.pool import UpstreamPool
    from proxy.request_head import Rewrite

__all__ = [
    "NotProcessed",
    "ResponseSink",
    "Upstream",
    "UpstreamClosed",
    "UpstreamConnection",
]

#: Response heads larger than this are treated as malformed (502).
MAX_RESPONSE_HEAD = 65536

#: Response headers never forwarded as they are: hop-by-hop ones and the framing the server
#: side redoes (its own Content-Length or chunking).
_OWN = HOP_BY_HOP | {b"content-length"}
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


# Module names for the members: a global load per use instead of an attribute lookup.
_IDLE, _WAITING, _INTERIM, _SWITCHING, _BODY, _TUNNEL = UpstreamState

#: Whether ``UpstreamConnection._to`` refuses a transition the table does not allow: off in
#: service like ``proxy.http1.CHECK_TRANSITIONS``, on in the tests.
CHECK_TRANSITIONS = False


class _Spent:
    """The callbacks of a closed connection's parser: none."""


#: What a closed connection's parser becomes (``connection_lost``): it holds no protocol.
_SPENT_PARSER = httptools.HttpResponseParser(_Spent())


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream. Not shared between concurrent requests."""

    multiplexed = False

    def __init__(
        self, pool: UpstreamPool | None, key: tuple[str, int], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._loop = loop
        #: ``host:port`` for a request that carries no Host of its own.
        self.authority = f"{key[0]}:{key[1]}".encode()
        #: Its loop's clock (``loop.time``), kept so that no per-request code has to call
        #: ``asyncio.get_running_loop()``: in CPython 3.11 that costs a getpid() syscall.
        self.clock = loop.time
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.requests = 0
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        #: Where the current exchange is (``proxy.states``); changed by ``_to`` or, on every
        #: request's path, inline after the same ``_check``.
        self.state = _IDLE
        self._sink: ResponseSink | None = None
        self._callback: Callable[[BaseException | None], None] | None = None
        #: A completed exchange's callback, called once llhttp has returned (see
        #: ``data_received``): never from inside a parser callback.
        self._finished: Callable[[BaseException | None], None] | None = None
        self._headers: HeaderList = []
        #: Framing and hop-by-hop headers of the head, as (lower-case name, value).
        self._own: HeaderList = []
        self._head_read = 0
        self._chunk_len = 0
        self._trailer_size = 0
        self._is_head = False
        self._until_close = False
        self._on_tunnel_close: Callable[[], None] | None = None
        self._tunnel_flow: Callable[[bool], None] | None = None
        self._write_paused = False
        self.reading_paused = False
        self._writable: asyncio.Future[None] | None = None
        self.body_bytes = 0
        self._chunked_body = False

    # --------------------------------------------------------- request lifecycle

    def begin(
        self,
        sink: ResponseSink,
        is_head: bool,
        callback: Callable[[BaseException | None], None],
    ) -> None:
        """Prepare for the next response; must precede writing the request head.

        The outcome is reported by calling ``callback`` once, with None (the response is
        whole) or the error; never from inside a parser callback.
        """
        self._sink = sink
        self._callback = callback
        self._headers = []
        self._own = []
        self._head_read = 0
        self._trailer_size = 0
        self._is_head = is_head
        self._until_close = False
        self.reusable = False
        self.body_bytes = 0
        self.requests += 1
        if CHECK_TRANSITIONS:
            self._check(_WAITING)
        self.state = _WAITING

    def _to(self, state: UpstreamState) -> None:
        """Change the exchange's state (``UPSTREAM_TRANSITIONS`` lists what may follow
        what; the tests check it, as for the client side). The three changes every request
        makes (WAITING, BODY, IDLE) are written inline instead, each after the same check
        (``_check``): three calls measured about 1 % of a proxied request."""
        if CHECK_TRANSITIONS:
            self._check(state)
        self.state = state

    def _check(self, state: UpstreamState) -> None:
        if state not in UPSTREAM_TRANSITIONS[self.state]:
            raise RuntimeError(f"upstream state {self.state.name} cannot become {state.name}")

    @property
    def untouched(self) -> bool:
        """Whether not one byte answered the current request: the one case where the
        request may never have reached the upstream (a malformed answer, an unasked 101,
        a 1xx or part of a head all prove that it did)."""
        return self.state is _WAITING and self._head_read == 0

    @property
    def got_head(self) -> bool:
        """Whether the current (or last) response's head was passed on."""
        return self.state >= _BODY

    def send_head(self, ex: Exchange, rewrite: Rewrite) -> None:
        """Write the request head (``proxy.request_head``); a body follows in the framing
        it announced (``send_body``, ``end_body``)."""
        if self.transport is not None and not self.closed:
            self.transport.write(build_request_head(ex, rewrite, self.authority))
        self._chunked_body = ex.chunked

    def send_body(self, data: bytes) -> None:
        if self._chunked_body:
            self.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.write(data)

    def end_body(self) -> None:
        if self._chunked_body:
            self.write(b"0\r\n\r\n")

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.writelines(parts)

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamClosed("upstream connection closed while sending the request body")
        if not self._write_paused:
            return
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()
        await self._writable

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def enter_tunnel(
        self,
        sink: ResponseSink,
        on_close: Callable[[], None],
        flow: Callable[[bool], None] | None = None,
    ) -> None:
        """Send every later byte to ``sink.on_body``; call ``on_close`` when the upstream ends.

        ``flow(paused)`` is told when writes to the upstream pause and resume, so the other
        side of the tunnel can stop reading.
        """
        self._to(_TUNNEL)
        self._sink = sink
        self._on_tunnel_close = on_close
        self._tunnel_flow = flow

    def write_eof(self) -> None:
        if self.transport is not None and not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()

    # ---------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.pool is not None:
            self.pool.forget(self)
        if self._on_tunnel_close is not None:
            on_close, self._on_tunnel_close = self._on_tunnel_close, None
            on_close()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(UpstreamClosed("upstream closed the connection"))
        if self._callback is not None:  # an outcome not reported yet
            if self._until_close and self.state is _BODY:
                self._resolve(None)
            elif self.state >= _BODY:
                self._resolve(UpstreamClosed("upstream response truncated"))
            else:
                reason = f": {exc}" if exc else ""
                self._resolve(UpstreamClosed(f"upstream closed the connection{reason}"))
        # Break the connection's cycles (parser callbacks, transport, sink), as the server
        # side does (``HttpServerProtocol.connection_lost``): freed by reference counting.
        self._parser = _SPENT_PARSER
        self.transport = None
        self._sink = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._tunnel_flow is not None:
            self._tunnel_flow(True)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._tunnel_flow is not None:
            self._tunnel_flow(False)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.state is _TUNNEL:
            assert self._sink is not None
            self._sink.on_body(data)
            return
        if self._sink is None:
            # Bytes on an idle connection: the server broke protocol; never reuse it.
            self.close()
            return
        sink = self._sink
        self._chunk_len = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self._finished is None:
                self._upgraded(data[offset:])
                return
            # A 101 after a whole response in one read: the server broke protocol.
            self._fail(BadGateway("upstream switched protocols unasked"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, BadGateway) else BadGateway(str(exc)))
        except httptools.HttpParserError as exc:
            self._fail(BadGateway(f"malformed response from upstream: {exc}"))
        else:
            if _IDLE < self.state < _BODY:
                # All of this read belongs to a head not yet complete: bound it, since
                # llhttp would buffer an endless header line without limit.
                self._head_read += len(data)
                if self._head_read > MAX_RESPONSE_HEAD:
                    self._fail(BadGateway("upstream response head too large"))
        finished = self._finished
        if finished is not None:
            # The response ended in this read. Its owner hears of it only now that llhttp
            # has returned, so it may reuse this connection at once (the pool hands it to
            # the next request, which may be started from inside this call).
            self._finished = None
            finished(None)
        elif self._sink is sink:
            # A head parsed from this read goes out now, with whatever body came along. (A
            # response that ended in this read was finished, head included, by its owner.)
            sink.flush()

    def _fail(self, error: BadGateway) -> None:
        self.abort()
        self._resolve(error)

    def _upgraded(self, rest: bytes) -> None:
        sink = self._sink
        if self._parser.get_status_code() != 101 or sink is None:
            self._fail(BadGateway("upstream switched protocols without a 101"))
            return
        upgrade = next((value for low, value in self._own if low == b"upgrade"), b"websocket")
        sink.on_upgrade(self._forwarded(), upgrade, rest)
        if self.state is not _TUNNEL:
            # The sink refused: the request did not ask to upgrade, or was answered already.
            self._fail(BadGateway("upstream switched protocols unasked"))
            return
        self._resolve(None)

    # ----------------------------------------------------------- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state is _BODY:
            # A trailer field: counted against the same bound, then dropped (the client's
            # response head is already out).
            self._trailer_size += len(name) + len(value) + 4
            if self._trailer_size > MAX_RESPONSE_HEAD:
                raise BadGateway("upstream response trailers too large")
            return
        # The head's size is checked once it is complete (``on_headers_complete``).
        low = cached_lower(name)
        if low is None:
            low = lower_name(name)
        if low in _OWN:
            self._own.append((low, value))  # framing and hop-by-hop: never forwarded
        else:
            self._headers.append((name, value))

    def _check_head_size(self) -> None:
        size = sum(len(name) + len(value) + 4 for name, value in self._headers + self._own)
        if size > MAX_RESPONSE_HEAD:
            raise BadGateway("upstream response head too large")

    def _forwarded(self) -> HeaderList:
        """The head's end-to-end headers: those a ``Connection`` header names dropped too."""
        headers = self._headers
        for low, value in self._own:
            if low == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                named = connection_tokens(self._own)
                return [(k, v) for k, v in headers if k.lower() not in named]
        return headers

    def on_headers_complete(self) -> None:
        if self._head_read + self._chunk_len > MAX_RESPONSE_HEAD:
            # The reads that held this head could hold too much (a head that came whole in
            # a small read cannot); while it is incomplete ``data_received`` bounds them.
            self._check_head_size()
        status = self._parser.get_status_code()
        sink = self._sink
        assert sink is not None
        if status < 200 and status != 101:
            self._to(_INTERIM)
            sink.on_informational(status, self._forwarded())
            self._headers = []
            self._own = []
            return
        if status == 101:
            # llhttp reports the message complete, then raises HttpParserUpgrade; both are
            # handled in ``_upgraded``.
            self._to(_SWITCHING)
            return
        length: int | None = None
        chunked = False
        plain = True  # no Connection header names headers to drop
        for low, value in self._own:
            if low == b"content-length":
                length = int(value)  # llhttp has checked it: digits, one value
            elif low == b"transfer-encoding":
                if chunked or value.strip().lower() != b"chunked":
                    # Another coding (gzip...) would reach the client unlabelled, since the
                    # server side frames the body itself: refused, as Go's client does.
                    raise BadGateway("upstream sent an unsupported Transfer-Encoding")
                chunked = True
            elif low == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                plain = False
        if CHECK_TRANSITIONS:
            self._check(_BODY)
        self.state = _BODY
        no_body = self._is_head or status in (204, 304)
        if chunked:
            length = None
        elif length is None and not no_body:
            self._until_close = True
        headers = self._headers if plain else self._forwarded()
        sink.on_head(status, headers, length if not no_body or self._is_head else None)
        if no_body and self._is_head:
            # llhttp cannot be told the request was HEAD: finish here and start a fresh
            # parser, so a Content-Length on the HEAD answer is not awaited as a body.
            self._parser = httptools.HttpResponseParser(self)
            self._complete(keep_alive=not self._until_close and self._keep_alive_header())

    def on_body(self, body: bytes) -> None:
        if self.state is _INTERIM:
            return
        self.body_bytes += len(body)
        assert self._sink is not None
        self._sink.on_body(body)

    def on_message_complete(self) -> None:
        state = self.state
        if state is _INTERIM:
            self._to(_WAITING)
            return
        if state is _SWITCHING:
            return
        callback = self._callback
        if callback is not None:
            # ``_complete`` inlined, once per proxied response: the calls measured ~1.5 % of
            # the engine's instructions.
            self.reusable = not self.closed and self._parser.should_keep_alive()
            self._sink = None
            self._callback = None
            self._finished = callback
            if CHECK_TRANSITIONS:
                self._check(_IDLE)
            self.state = _IDLE

    def _keep_alive_header(self) -> bool:
        for low, value in self._own:
            if low == b"connection" and b"close" in value.lower():
                return False
        return True

    def _complete(self, keep_alive: bool) -> None:
        """The response is whole (called from a parser callback)."""
        self.reusable = keep_alive and not self.closed
        self._sink = None
        callback = self._callback
        if callback is not None:
            self._callback = None
            self._finished = callback  # called by ``data_received`` once llhttp returns
        self._to(_IDLE)

    def _resolve(self, error: BaseException | None) -> None:
        """Report the exchange's outcome once, to its callback."""
        callback = self._callback
        if callback is not None:
            self._callback = None
            callback(error)
