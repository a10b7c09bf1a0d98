"""The upstream side of the engine over HTTP/2 (h2c): one multiplexed connection per upstream.

Theory of operation
-------------------
An HTTP/2 request is sent upstream as h2c (``proxy.forward`` mirrors the client's protocol,
as Knative's transports do). ``H2Upstream`` is one connection carrying up to the stream limit
the upstream advertised; ``UpstreamPool`` opens another when every connection is full, and
stops using one that received GOAWAY. ``H2Call`` is one stream: to ``proxy.forward`` it is
the same ``Upstream`` as an HTTP/1.1 connection (``begin``, ``send_head``, ``send_body``,
the response pushed into a ``ResponseSink``, the outcome reported once), so the one
``Forwarding`` lifecycle serves both protocols.

Back-pressure per stream: response DATA is acknowledged (WINDOW_UPDATE) as it is passed on,
and held while the client is not reading (``pause_reading``), so a stalled client stops only
its own stream upstream. A stream the upstream refused (REFUSED_STREAM), or that GOAWAY says
it never processed, fails with ``NotProcessed``: ``Forwarding`` may send it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import h2.events
import h2.exceptions
import h2.settings

from proxy.client import NotProcessed, ResponseSink, UpstreamClosed
from proxy.errors import BadGateway
from proxy.exchange import Exchange
from proxy.h2conn import new_connection
from proxy.headers import HeaderList
from proxy.request_head import Rewrite, h2_request_fields

if TYPE_CHECKING:
    from proxy.pool import UpstreamPool

__all__ = ["H2Call", "H2Upstream"]

_SETTINGS = h2.settings.SettingCodes
#: Response bytes one stream (and, separately, the connection) may have unread in flight.
WINDOW = 1 << 20
REFUSED_STREAM = 0x7
CANCEL = 0x8


class H2Upstream(asyncio.Protocol):
    """One h2c connection to an upstream, shared by concurrent calls."""

    def __init__(
        self, pool: UpstreamPool | None, key: tuple[str, int], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.pool = pool
        self.key = key
        self.loop = loop
        self.authority = f"{key[0]}:{key[1]}".encode()
        self.transport: asyncio.Transport | None = None
        self.h2 = new_connection(client_side=True)
        self.calls: dict[int, H2Call] = {}
        self.closed = False
        #: Set by GOAWAY: no new streams (the pool dials another connection).
        self.draining = False
        self.streams_opened = 0
        self.write_paused = False
        self._flush_due = False
        #: Calls handed out whose stream is not open yet (``send_head`` opens it).
        self.reserved = 0
        #: Whether the upstream's SETTINGS arrived (its stream limit is then known).
        self.settled = False
        #: Calls whose response head arrived in the read being handled.
        self._heads: list[H2Call] = []

    # ------------------------------------------------------------------ calls

    @property
    def has_room(self) -> bool:
        """Whether one more stream fits under the upstream's limit (until its SETTINGS
        arrive, 100, as Go's client assumes: h2 would assume no limit)."""
        if self.closed or self.draining:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams if self.settled else 100
        return self.reserved + len(self.calls) < limit

    def call(self) -> H2Call:
        """A new call (its stream is opened by ``send_head``; it counts against the
        limit from now on)."""
        self.streams_opened += 1
        self.reserved += 1
        return H2Call(self)

    # --------------------------------------------------------------- transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        local = self.h2.local_settings
        local[_SETTINGS.INITIAL_WINDOW_SIZE] = WINDOW
        local[_SETTINGS.ENABLE_PUSH] = 0
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(WINDOW - 65535)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pool is not None:
            self.pool.forget_h2(self)
        reason = f": {exc}" if exc else ""
        for call in list(self.calls.values()):
            call.failed(UpstreamClosed(f"upstream closed the connection{reason}"))
        self.calls.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for call in list(self.calls.values()):
            call.wake()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            try:
                self.h2.close_connection()
                self.flush_now()
            finally:
                self.transport.close()

    def flush(self) -> None:
        """Write what h2 queued at the end of this loop iteration (one write per turn)."""
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush_if_due)

    def _flush_if_due(self) -> None:
        if self._flush_due:
            self.flush_now()

    def flush_now(self) -> None:
        self._flush_due = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # ------------------------------------------------------------------- input

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush_now()
            self._broken(BadGateway(f"upstream broke HTTP/2: {exc}"))
            return
        heads = self._heads = []
        for event in events:
            self._event(event)
        for call in heads:
            # A head goes out once the whole read is handled: a response that also ended
            # in it (gRPC's trailers-only answer) leaves as one HEADERS frame.
            call.flush_head()
        self.flush()

    def _broken(self, error: BadGateway) -> None:
        self.closed = True
        for call in list(self.calls.values()):
            call.failed(error)
        self.calls.clear()
        if self.transport is not None:
            self.transport.abort()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            call = self.calls.get(event.stream_id)
            if call is None:
                self.acknowledge(event.stream_id, event.flow_controlled_length)
            else:
                call.data(event.data or b"", event.flow_controlled_length)
        elif isinstance(event, h2.events.ResponseReceived):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.head(event.headers or [])
                self._heads.append(call)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.informational(event.headers or [])
        elif isinstance(event, h2.events.TrailersReceived):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.trailers(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.pop(event.stream_id, None)
            if call is not None:
                call.complete()
        elif isinstance(event, h2.events.StreamReset):
            call = self.calls.pop(event.stream_id, None)
            if call is not None:
                if event.error_code == REFUSED_STREAM and not call.got_head:
                    call.failed(NotProcessed("upstream refused the stream"))
                else:
                    call.failed(UpstreamClosed(f"upstream reset the stream ({event.error_code})"))
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                call = self.calls.get(event.stream_id)
                if call is not None:
                    call.wake()
            else:
                for call in list(self.calls.values()):
                    call.wake()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settled = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.draining = True
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for sid, call in list(self.calls.items()):
                if sid > last:
                    del self.calls[sid]
                    call.failed(NotProcessed("upstream said GOAWAY before processing it"))
            if self.pool is not None:
                self.pool.forget_h2(self)
            if not self.calls:
                self.close()

    def acknowledge(self, sid: int, n: int) -> None:
        if n and not self.closed:
            try:
                self.h2.acknowledge_received_data(n, sid)
            except h2.exceptions.ProtocolError:
                self.h2.increment_flow_control_window(n)

    def finished(self, call: H2Call) -> None:
        """``call`` is over: drop it, and close a draining connection left empty."""
        if self.calls.get(call.sid) is call:
            del self.calls[call.sid]
        if self.draining and not self.calls:
            self.close()


class H2Call:
    """One request/response stream on an ``H2Upstream``: ``proxy.client.Upstream``."""

    multiplexed = True
    untouched = False  # replayed only when ``NotProcessed`` says so

    __slots__ = (
        "_callback",
        "_held",
        "_is_head",
        "_pending",
        "_reserved",
        "_sink",
        "_waiter",
        "closed",
        "conn",
        "ended",
        "got_head",
        "reading_paused",
        "requests",
        "reusable",
        "sid",
    )

    def __init__(self, conn: H2Upstream) -> None:
        self.conn = conn
        self.sid = 0
        #: The connection's streams so far: more than one means it was reused.
        self.requests = conn.streams_opened
        self.reusable = False  # a call is never pooled: its connection is
        self.closed = False
        self.ended = False
        self.got_head = False
        self.reading_paused = False
        self._sink: ResponseSink | None = None
        self._callback: Callable[[BaseException | None], None] | None = None
        self._is_head = False
        self._held = 0
        self._waiter: asyncio.Future[None] | None = None
        #: Body bytes the upstream's window had no room for yet (``drain`` sends them).
        self._pending: bytes | None = None
        #: Whether it still holds a place in ``conn.reserved`` (until its stream opens).
        self._reserved = True

    @property
    def authority(self) -> bytes:
        return self.conn.authority

    # ----------------------------------------------------------------- request

    def begin(
        self, sink: ResponseSink, is_head: bool, callback: Callable[[BaseException | None], None]
    ) -> None:
        self._sink = sink
        self._is_head = is_head
        self._callback = callback

    def send_head(self, ex: Exchange, rewrite: Rewrite) -> None:
        conn = self.conn
        self._unreserve()
        if conn.closed:
            self.failed(UpstreamClosed("upstream connection closed"))
            return
        try:
            self.sid = conn.h2.get_next_available_stream_id()
            fields = h2_request_fields(ex, rewrite, conn.authority)
            conn.h2.send_headers(self.sid, fields, end_stream=not ex.has_body)
        except h2.exceptions.ProtocolError as exc:
            self.failed(NotProcessed(f"upstream connection cannot open a stream: {exc}"))
            return
        conn.calls[self.sid] = self
        conn.flush()

    def send_body(self, data: bytes) -> None:
        """Queue body bytes; ``drain`` waits until the upstream's window took them."""
        conn = self.conn
        if self.closed or conn.closed:
            return
        h2conn = conn.h2
        view = memoryview(data)
        while view:
            room = h2conn.local_flow_control_window(self.sid)
            if room <= 0:
                break
            size = min(room, len(view), h2conn.max_outbound_frame_size)
            h2conn.send_data(self.sid, view[:size].tobytes())
            view = view[size:]
        conn.flush()
        if view:
            self._pending = view.tobytes()

    async def drain(self) -> None:
        """Wait until the upstream's flow-control window took everything sent so far."""
        pending = self._pending
        while pending:
            if self.closed or self.conn.closed:
                raise UpstreamClosed("upstream stream closed while sending the request body")
            self._waiter = self.conn.loop.create_future()
            await self._waiter
            h2conn = self.conn.h2
            room = h2conn.local_flow_control_window(self.sid)
            if room > 0:
                size = min(room, len(pending), h2conn.max_outbound_frame_size)
                h2conn.send_data(self.sid, pending[:size])
                pending = pending[size:]
                self.conn.flush()
        self._pending = None
        while self.conn.write_paused and not self.conn.closed:
            self._waiter = self.conn.loop.create_future()
            await self._waiter

    def end_body(self) -> None:
        if not self.closed and not self.conn.closed:
            try:
                self.conn.h2.end_stream(self.sid)
            except h2.exceptions.ProtocolError:
                return
            self.conn.flush()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---------------------------------------------------------------- response

    def informational(self, fields: HeaderList) -> None:
        status, headers, _ = _split(fields)
        if self._sink is not None and status != 101:
            self._sink.on_informational(status, headers)

    def head(self, fields: HeaderList) -> None:
        status, headers, length = _split(fields)
        self.got_head = True
        sink = self._sink
        if sink is None:
            return
        no_body = self._is_head or status in (204, 304)
        sink.on_head(status, headers, length if not no_body or self._is_head else None)

    def flush_head(self) -> None:
        sink = self._sink
        if sink is not None:
            sink.flush()

    def data(self, data: bytes, flow_controlled: int) -> None:
        sink = self._sink
        if sink is not None and data:
            sink.on_body(data)
        if self.reading_paused:
            self._held += flow_controlled
        else:
            self.conn.acknowledge(self.sid, flow_controlled)

    def trailers(self, fields: HeaderList) -> None:
        sink = self._sink
        if sink is not None:
            sink.on_trailers([(n, v) for n, v in fields if n[:1] != b":"])

    def complete(self) -> None:
        """The response is whole (END_STREAM)."""
        self.ended = True
        self._resolve(None)

    def failed(self, error: BaseException) -> None:
        self.closed = True
        self.wake()
        self._resolve(error)

    def _resolve(self, error: BaseException | None) -> None:
        callback = self._callback
        if callback is not None:
            self._callback = None
            self._sink = None
            callback(error)

    # ----------------------------------------------------------- flow / control

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        held, self._held = self._held, 0
        if held:
            self.conn.acknowledge(self.sid, held)
            self.conn.flush()

    def abort(self) -> None:
        """Cancel the call: RST_STREAM CANCEL; the outcome is reported as a cut."""
        if not self.closed:
            self._reset()
            self.failed(UpstreamClosed("upstream call cancelled"))

    def _unreserve(self) -> None:
        if self._reserved:
            self._reserved = False
            self.conn.reserved -= 1

    def close(self) -> None:
        """The call is let go (``UpstreamPool.release``): a stream still open is cancelled."""
        self._unreserve()
        if not self.ended and not self.closed:
            self._reset()
        self.closed = True
        self.conn.finished(self)

    def _reset(self) -> None:
        conn = self.conn
        if self.sid and not conn.closed:
            try:
                conn.h2.reset_stream(self.sid, CANCEL)
            except h2.exceptions.ProtocolError:
                pass
            conn.flush()
        conn.calls.pop(self.sid, None)

    def enter_tunnel(
        self,
        sink: ResponseSink,
        on_close: Callable[[], None],
        flow: Callable[[bool], None] | None = None,
    ) -> None:
        raise BadGateway("upgrades are not supported over HTTP/2")

    def write_eof(self) -> None:
        """No tunnels over HTTP/2 (``enter_tunnel``)."""

    def write(self, data: bytes) -> None:
        """No tunnels over HTTP/2 (``enter_tunnel``)."""


def _split(fields: HeaderList) -> tuple[int, HeaderList, int | None]:
    """(status, end-to-end headers, Content-Length) of a response HEADERS frame."""
    status = 0
    length: int | None = None
    headers: HeaderList = []
    for name, value in fields:
        if name == b":status":
            status = int(value)
        elif name == b"content-length":
            length = int(value)
        elif name[:1] != b":":
            headers.append((name, value))
    return status, headers, length
