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

from proxy.client import NotProcessed, ResponseSink, UpstreamClosed
from proxy.errors import BadGateway
from proxy.exchange import Exchange
from proxy.h2codec import H2Codec
from proxy.h2frames import H2Error
from proxy.headers import HeaderList
from proxy.request_head import Rewrite, h2_request_fields

if TYPE_CHECKING:
    from proxy.pool import UpstreamPool

__all__ = ["H2Call", "H2Upstream"]

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
        self.h2 = H2Codec(self, client_side=True, window=WINDOW)
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
        arrive, 100, as Go's client assumes)."""
        if self.closed or self.draining:
            return False
        limit = self.h2.peer_max_streams if self.settled else 100
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
        self.flush()  # the codec's preface

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
                self.h2.goaway(0)
                self.flush_now()
            finally:
                self.transport.close()

    def flush(self) -> None:
        """Write what the codec queued at the end of this loop iteration (one write per turn)."""
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
        heads = self._heads = []
        try:
            self.h2.receive(data)
        except H2Error as exc:
            self.flush_now()
            self._broken(BadGateway(f"upstream broke HTTP/2: {exc}"))
            return
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

    # What the codec says the frames mean (``proxy.h2codec.H2Handler``).

    def on_headers(self, sid: int, fields: HeaderList, ended: bool) -> None:
        call = self.calls.get(sid)
        if call is not None:
            call.head(fields)
            self._heads.append(call)
            if ended:
                del self.calls[sid]
                call.complete()

    def on_informational(self, sid: int, fields: HeaderList) -> None:
        call = self.calls.get(sid)
        if call is not None:
            call.informational(fields)

    def on_trailers(self, sid: int, fields: HeaderList) -> None:
        call = self.calls.get(sid)
        if call is not None:
            call.trailers(fields)

    def on_data(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        call = self.calls.get(sid)
        if call is None:
            self.acknowledge(sid, flow)
            return
        if data or flow:
            call.data(data, flow)
        if ended:
            del self.calls[sid]
            call.complete()

    def on_reset(self, sid: int, code: int) -> None:
        call = self.calls.pop(sid, None)
        if call is not None:
            if code == REFUSED_STREAM and not call.got_head:
                call.failed(NotProcessed("upstream refused the stream"))
            else:
                call.failed(UpstreamClosed(f"upstream reset the stream ({code})"))

    def on_window(self, sid: int) -> None:
        if sid:
            call = self.calls.get(sid)
            if call is not None:
                call.wake()
        else:
            for call in list(self.calls.values()):
                call.wake()

    def on_settings(self, changed: dict[int, int]) -> None:
        self.settled = True
        if 0x4 in changed:  # SETTINGS_INITIAL_WINDOW_SIZE: stream windows moved
            self.on_window(0)

    def on_ping(self) -> None:
        """Answered by the codec."""

    def on_goaway(self, last_sid: int, code: int) -> None:
        self.draining = True
        for sid, call in list(self.calls.items()):
            if sid > last_sid:
                del self.calls[sid]
                call.failed(NotProcessed("upstream said GOAWAY before processing it"))
        if self.pool is not None:
            self.pool.forget_h2(self)
        if not self.calls:
            self.close()

    def acknowledge(self, sid: int, n: int) -> None:
        if n and not self.closed:
            self.h2.acknowledge(sid, n)

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
        if conn.h2.closed or conn.h2.goaway_received:
            self.failed(NotProcessed("upstream connection cannot open a stream: GOAWAY"))
            return
        self.sid = conn.h2.new_stream()
        fields = h2_request_fields(ex, rewrite, conn.authority)
        conn.h2.send_headers(self.sid, fields, not ex.has_body)
        conn.calls[self.sid] = self
        conn.flush()

    def send_body(self, data: bytes) -> None:
        """Queue body bytes; ``drain`` waits until the upstream's window took them."""
        conn = self.conn
        if self.closed or conn.closed:
            return
        sent = conn.h2.send_data(self.sid, data)
        conn.flush()
        if sent < len(data):
            self._pending = data[sent:]

    async def drain(self) -> None:
        """Wait until the upstream's flow-control window took everything sent so far."""
        pending = self._pending
        while pending:
            if self.closed or self.conn.closed:
                raise UpstreamClosed("upstream stream closed while sending the request body")
            self._waiter = self.conn.loop.create_future()
            await self._waiter
            sent = self.conn.h2.send_data(self.sid, pending)
            if sent:
                pending = pending[sent:]
                self.conn.flush()
        self._pending = None
        while self.conn.write_paused and not self.conn.closed:
            self._waiter = self.conn.loop.create_future()
            await self._waiter

    def end_body(self) -> None:
        if not self.closed and not self.conn.closed:
            self.conn.h2.end_stream(self.sid)
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
            conn.h2.reset_stream(self.sid, CANCEL)
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
