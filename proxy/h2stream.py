"""One HTTP/2 stream as the engine's handlers see it: an ``Exchange`` and what carries it.

``H2Exchange`` is an ``Exchange`` whose response side writes HEADERS and DATA frames instead
of HTTP/1.1 bytes; its request side is the base class's (``read_body``, ``header``...), fed
by ``proxy.http2``. ``H2Stream`` is its ``Carrier``: the stream's flow control both ways.
Request body bytes are acknowledged (WINDOW_UPDATE) as the handler takes them, so a slow
handler holds back only its own stream; response bytes beyond the peer's window wait in the
stream's outbox and ``write_paused`` tells the upstream side to stop reading meanwhile.
A stream has no tunnel and no ``100 Continue`` (HTTP/2 clients send the body at once).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.errors import BadRequest
from proxy.exchange import ClientDisconnected, Exchange
from proxy.headers import HeaderList
from proxy.states import ResponseState

if TYPE_CHECKING:
    from proxy.context import FlowListener, ServerContext
    from proxy.http2 import H2ServerProtocol

__all__ = ["VERSION", "H2Exchange", "H2Stream", "read_head"]

#: ``Exchange.version`` of a request that came over HTTP/2 (Go's ``Request.Proto`` is
#: ``HTTP/2.0``); ``proxy.forward`` mirrors it upstream as h2c.
VERSION = "2.0"

_PENDING, _HEAD, _DONE = ResponseState

#: Header fields HTTP/2 forbids (RFC 9113 section 8.2.2): the upstream side strips them
#: already; this catches a handler's own.
CONNECTION_SPECIFIC = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)

# RST_STREAM codes (RFC 9113 section 7).
NO_ERROR = 0x0
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8


class H2Stream:
    """The carrier of one stream's exchange (``proxy.exchange.Carrier``)."""

    __slots__ = (
        "_acked_upto",
        "_body_paused",
        "_end_after",
        "_outbox",
        "_over",
        "_unacked",
        "_writable",
        "closed",
        "ctx",
        "ex",
        "flow_listener",
        "local_ended",
        "peer",
        "peer_port",
        "proto",
        "remote_ended",
        "sid",
    )

    def __init__(self, proto: H2ServerProtocol, sid: int) -> None:
        self.proto = proto
        self.ctx: ServerContext = proto.ctx
        self.sid = sid
        self.peer = proto.peer
        self.peer_port = proto.peer_port
        self.flow_listener: FlowListener | None = None
        self.ex: H2Exchange | None = None
        #: Response DATA the peer's window has no room for yet, and whether END_STREAM (or
        #: trailers: a header list) follows it.
        self._outbox: deque[bytes] = deque()
        self._end_after: HeaderList | bool = False
        self._writable: asyncio.Future[None] | None = None
        #: The exchange is over but its response's tail waits for the peer's window.
        self._over = False
        #: Request body bytes received but not yet acknowledged (held while paused).
        self._unacked = 0
        self._body_paused = False
        self._acked_upto = 0
        #: Whether the client's side ended (END_STREAM), ours ended, or the stream is gone.
        self.remote_ended = False
        self.local_ended = False
        self.closed = False

    # ---------------------------------------------------------------- carrier

    @property
    def write_paused(self) -> bool:
        return bool(self._outbox) or self.proto.write_paused

    def write_raw(self, data: bytes) -> None:
        """Unused: an HTTP/2 exchange writes frames (``H2Exchange``), never raw bytes."""

    def write_lines(self, parts: tuple[bytes, ...]) -> None:
        """Unused, as ``write_raw``."""

    async def wait_writable(self) -> None:
        while True:
            if self.closed:
                raise ClientDisconnected("client reset the stream")
            if not self.write_paused:
                return
            if self._writable is None or self._writable.done():
                self._writable = self.ctx.loop.create_future()
            await self._writable

    def pause_reading(self) -> None:
        """Reading is per connection: a stream holds back its window instead (``pause_body``)."""

    def resume_reading(self) -> None:
        """See ``pause_reading``."""

    def pause_body(self) -> None:
        self._body_paused = True

    def resume_body(self) -> None:
        if self._body_paused:
            self._body_paused = False
            self._ack()

    def close(self) -> None:
        """Cut the response (``Exchange.abort``): RST_STREAM, the connection lives on."""
        self.reset(INTERNAL_ERROR)

    def exchange_over(self, ex: Exchange) -> None:
        if self._outbox or self._end_after is not False:
            self._over = True  # forgotten once the tail is out (``window_opened``)
            return
        self.proto.stream_over(self)

    def enter_tunnel(
        self,
        on_data: Callable[[bytes], None],
        on_close: Callable[[], None],
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        raise BadRequest("upgrades are not supported over HTTP/2")

    # ------------------------------------------------------------- request body

    def received(self, data: bytes, flow_controlled: int) -> None:
        """Body bytes from a DATA frame; acknowledged now unless the handler is behind."""
        ex = self.ex
        self._unacked += flow_controlled
        if ex is not None and data:
            ex.push_body(data)  # may pause the body (``pause_body``)
        if not self._body_paused:
            self._ack()

    def _ack(self) -> None:
        if self._unacked and not self.closed:
            n, self._unacked = self._unacked, 0
            self.proto.acknowledge(self.sid, n)

    # ---------------------------------------------------------------- response

    def send_headers(self, fields: HeaderList, end: bool) -> None:
        if self.closed or self.local_ended:
            return
        if end:
            self.local_ended = True
        self.proto.send_headers(self.sid, fields, end)

    def send_data(self, data: bytes) -> None:
        if self.closed or self.local_ended:
            return
        if self._outbox:
            self._outbox.append(data)
            return
        sent = self.proto.send_data(self.sid, data)
        if sent < len(data):
            self._outbox.append(data[sent:])
            if self.flow_listener is not None:
                self.flow_listener.flow(True)

    def finish(self, trailers: HeaderList | None) -> None:
        """End the response: trailers (a HEADERS frame) or an empty END_STREAM DATA frame,
        after whatever waits in the outbox."""
        if self.closed or self.local_ended:
            return
        if self._outbox:
            self._end_after = trailers if trailers else True
            return
        self.local_ended = True
        if trailers:
            self.proto.send_headers(self.sid, trailers, True)
        else:
            self.proto.end_stream(self.sid)

    def window_opened(self) -> None:
        """The peer's window (or the socket) has room again: send what waits."""
        if self.closed:
            return
        outbox = self._outbox
        while outbox:
            data = outbox[0]
            sent = self.proto.send_data(self.sid, data)
            if sent < len(data):
                outbox[0] = data[sent:]
                return
            outbox.popleft()
        end = self._end_after
        if end is not False:
            self._end_after = False
            self.finish(end if isinstance(end, list) else None)
        if self._over:
            self._over = False
            self.proto.stream_over(self)
            return
        self._wake()

    def _wake(self) -> None:
        if self.write_paused:
            return
        if self.flow_listener is not None:
            self.flow_listener.flow(False)
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def reset(self, code: int) -> None:
        """Send RST_STREAM (unless the stream already ended both ways) and forget it."""
        if self.closed:
            return
        self.proto.reset(self, code)

    def gone(self, reason: str) -> None:
        """The stream is closed (reset either way, or the connection is lost): stop its
        exchange's owner, fail a body read, wake writers."""
        if self.closed:
            return
        self.closed = True
        self._outbox.clear()
        ex = self.ex
        if ex is not None:
            ex.body_failed(ClientDisconnected(reason))
            if ex.response is not _DONE:
                ex.response = _DONE
                ex.cancel()
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientDisconnected(reason))
            waiter.exception()  # read here, so that a waiter nobody awaits is not reported
        if self.flow_listener is not None:
            self.flow_listener.flow(False)
        self.release()

    def release(self) -> None:
        """The stream is over: let go of its exchange and the exchange's owner, which point
        back at it (the request's objects are then freed by reference counting alone, not
        left for the cycle collector: the hot-path rule in ``proxy/http1.py``)."""
        self.ex = None
        self.flow_listener = None


class H2Exchange(Exchange):
    """An exchange carried by an HTTP/2 stream: same request side, frames for the response."""

    __slots__ = ("_fields", "_length", "_no_body", "_trailers", "stream")

    def __init__(self, stream: H2Stream) -> None:
        super().__init__(stream)
        self.stream = stream
        self.version = VERSION
        self._fields: HeaderList | None = None
        self._trailers: HeaderList | None = None
        self._no_body = False
        #: Bytes still owed under a Content-Length the handler announced (-1: none).
        self._length = -1

    def start_response(
        self, status: int, headers: HeaderList, content_length: int | None = None
    ) -> None:
        if self.response is not _PENDING:
            raise RuntimeError("response already started")
        self.response = _HEAD
        self.status = status
        fields: HeaderList = [(b":status", b"%d" % status)]
        for name, value in headers:
            low = name.lower()
            if low not in CONNECTION_SPECIFIC:
                fields.append((low, value))
        self._no_body = self.method == b"HEAD" or status in (204, 304) or status < 200
        if content_length is not None and status != 204 and status >= 200:
            fields.append((b"content-length", b"%d" % content_length))
            if not self._no_body:
                self._length = content_length
        # Held back, as HTTP/1.1 holds its head: one HEADERS frame with the first DATA.
        self._fields = fields

    def flush(self) -> None:
        fields = self._fields
        if fields is not None:
            self._fields = None
            self.stream.send_headers(fields, self._no_body)

    def informational(self, status: int, headers: HeaderList) -> None:
        if self.response is not _PENDING or status == 101:
            return
        fields: HeaderList = [(b":status", b"%d" % status)]
        fields += [(n.lower(), v) for n, v in headers if n.lower() not in CONNECTION_SPECIFIC]
        self.stream.send_headers(fields, False)

    def write(self, data: bytes) -> None:
        if self.response is _DONE or not data:
            return
        self.flush()
        if self._no_body:
            return
        if self._length >= 0:
            if len(data) > self._length:
                data = data[: self._length]
            self._length -= len(data)
        self.stream.send_data(data)
        self.bytes_out += len(data)
        self.last_write = self.stream.ctx.loop.time()

    def trailers(self, headers: HeaderList) -> None:
        self._trailers = [
            (n.lower(), v) for n, v in headers if n.lower() not in CONNECTION_SPECIFIC
        ]

    def end(self) -> None:
        if self.response is _DONE:
            return
        if self._length > 0:
            self.abort()
            return
        self.response = _DONE
        fields = self._fields
        if fields is not None:
            self._fields = None
            if self._no_body or not self._trailers:
                self.stream.send_headers(fields, True)
                return
            self.stream.send_headers(fields, False)
        if not self._no_body:
            self.stream.finish(self._trailers)

    def abort(self) -> None:
        """Cut the response: RST_STREAM INTERNAL_ERROR, as Go's server does for a handler
        that panics or a proxy whose upstream broke mid-body. The connection lives on."""
        self.response = _DONE
        self.flush()
        self.stream.reset(INTERNAL_ERROR)

    def start_tunnel(
        self,
        headers: HeaderList,
        on_data: Callable[[bytes], None],
        on_close: Callable[[], None],
        on_eof: Callable[[], None] | None = None,
    ) -> Callable[[bytes], None]:
        raise BadRequest("upgrades are not supported over HTTP/2")


def read_head(ex: H2Exchange, fields: HeaderList) -> None:
    """Fill ``ex``'s request side from a HEADERS frame the codec has checked (pseudo-fields
    first, names lower-case): ``:authority`` becomes Host, as Go's server does."""
    method = path = authority = b""
    headers: HeaderList = []
    has_host = False
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"host":
            has_host = True
        elif name == b"content-length":
            if not value.isdigit():
                raise BadRequest("invalid content-length")
            ex.content_length = int(value)
        headers.append((name, value))
    if authority and not has_host:
        headers.insert(0, (b"host", authority))
    ex.method = method
    ex.target = path
    ex.set_headers(headers)
    if method == b"CONNECT":
        raise BadRequest("CONNECT is not supported")
    if not path:
        raise BadRequest("missing :path")
