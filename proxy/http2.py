"""The HTTP/2 server side of the engine (h2c): one ``asyncio.Protocol`` per connection.

Theory of operation (``docs/design.md`` has the whole request path)
-------------------------------------------------------------------
The codec (``proxy.h2codec``, sans-IO) does the framing, HPACK and flow-control
bookkeeping; this module moves bytes between it and the socket and is its handler: it turns
what the frames mean into exchanges. Each
request stream becomes an ``H2Exchange`` (``proxy.h2stream``) handed to the same handler as
an HTTP/1.1 request, through the same ``proxy.context.serve``: one stream is one request
everywhere it counts (breaker, stats, timeouts, metrics).

A connection arrives here from ``proxy.http1``: by the client's connection preface on a
fresh connection (prior knowledge), or by an ``Upgrade: h2c`` request answered 101, which
becomes stream 1.

Bounds, so that no client makes the server hold more than it was told:
* streams: at most ``h2_max_streams`` being served; one more is refused with REFUSED_STREAM;
* request bodies: the flow-control windows (``h2_window``), reopened only as handlers read;
* response bodies: a stream whose client does not open its window keeps its bytes in its
  outbox and pauses its upstream; the socket's own back-pressure pauses reading the
  connection, which bounds control-frame replies too;
* abuse: resets of streams being served (rapid reset) and PING/SETTINGS frames beyond
  ``h2_max_abuse_per_second`` close the connection with ENHANCE_YOUR_CALM; protocol errors
  (HPACK bombs, window overflow, bad frames) with the code the codec names, in a GOAWAY.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from proxy.context import ServerContext, serve
from proxy.errors import BadRequest, PayloadTooLarge
from proxy.h2codec import H2Codec
from proxy.h2frames import INITIAL_WINDOW_SIZE, PREFACE, H2Error
from proxy.h2stream import CANCEL, NO_ERROR, REFUSED_STREAM, H2Exchange, H2Stream, read_head
from proxy.headers import HeaderList

__all__ = ["PREFACE", "H2ServerProtocol", "serve_h2"]

log = logging.getLogger("sluice.http2")

ENHANCE_YOUR_CALM = 0xB
#: How long a connection ended by an error waits for the client to close (``_linger``).
LINGER_S = 1.0


class H2ServerProtocol(asyncio.Protocol):
    """One HTTP/2 client connection. See the module docstring for the rules it keeps."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        limits = ctx.limits
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_port = 0
        self.max_streams = limits.h2_max_streams
        self.h2 = H2Codec(
            self,
            client_side=False,
            window=limits.h2_window,
            max_header_list_size=limits.max_total_header_bytes,
            max_streams=self.max_streams,
        )
        self.streams: dict[int, H2Stream] = {}
        self.write_paused = False
        self.closed = False
        self.goaway_sent = False
        self._flush_due = False
        self.idle_since = ctx.loop.time()
        #: The highest stream the client opened: what a GOAWAY says was (or is) processed.
        self.last_stream = 0
        self._abuse = 0
        self._abuse_window = 0.0
        self._linger_timer: asyncio.TimerHandle | None = None

    # --------------------------------------------------------------- lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else ""
        self.peer_port = peer[1] if isinstance(peer, tuple) and len(peer) > 1 else 0
        self.ctx.connections.add(self)

    def start(self, upgrade_settings: bytes | None = None) -> None:
        """Send the server preface (the codec's SETTINGS with the limits, and the
        connection window opened as far as a stream's); after a 101 the client's
        HTTP2-Settings apply."""
        if upgrade_settings is not None:
            self.h2.upgraded(upgrade_settings)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self.ctx.connections.discard(self)
        for stream in list(self.streams.values()):
            stream.gone("client connection lost")
        self.streams.clear()

    def close(self) -> None:
        """Say GOAWAY (streams in progress finish first when closing gracefully) and close."""
        if self.closed:
            return
        self.goaway(NO_ERROR)
        if not self.streams and self.transport is not None:
            self.closed = True
            self._linger()

    def goaway(self, code: int) -> None:
        """Say GOAWAY once: gracefully (NO_ERROR) the streams already open still finish;
        an error code ends the connection."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self.h2.goaway(code, self.last_stream)
        self.flush()

    def _fail(self, code: int, reason: str) -> None:
        """End the connection at once: GOAWAY ``code``, every stream gone, then close
        after the client had a moment to read the GOAWAY (``_linger``)."""
        log.info("closing HTTP/2 connection from %s: %s", self.peer, reason)
        self.goaway(code)
        self.closed = True
        for stream in list(self.streams.values()):
            stream.gone(f"HTTP/2 connection error: {reason}")
        self.streams.clear()
        self._linger()

    def _linger(self) -> None:
        """After the GOAWAY: half-close, drop whatever the client still sends, and close once
        it closes or ``LINGER_S`` passed. Closing at once with its bytes unread would make
        the kernel answer with a reset, which can reach the client before the GOAWAY and the
        last frames do (Go's server waits too)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._linger_timer = self.ctx.loop.call_later(LINGER_S, transport.close)

    @property
    def idle(self) -> bool:
        return not self.streams

    @property
    def tunnelled(self) -> bool:
        return False

    def check_timeouts(self, now: float) -> None:
        """GOAWAY once the server is closing; close when idle past keep-alive or drained."""
        if self.closed:
            return
        if self.ctx.closing or (
            not self.streams and now - self.idle_since > self.ctx.limits.keepalive_timeout
        ):
            self.close()

    # ------------------------------------------------------------------ input

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.h2.receive(data)
        except H2Error as exc:
            self.flush()  # the codec has queued its GOAWAY with the error's code
            self._fail(exc.code, f"protocol error: {exc}")
            return
        self._flush()

    # What the codec says the frames mean (``proxy.h2codec.H2Handler``).

    def on_headers(self, sid: int, fields: HeaderList, ended: bool) -> None:
        if not self.closed:
            self._open(sid, fields, ended)

    def on_informational(self, sid: int, fields: HeaderList) -> None:
        """Only a client receives these (the codec refuses them here)."""

    def on_trailers(self, sid: int, fields: HeaderList) -> None:
        """Request trailers are not passed on (as Knative's proxies); the end follows."""

    def on_data(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            # A stream already answered and forgotten: give the window back.
            self.acknowledge(sid, flow)
            return
        if data or flow:
            self._body(stream, data, flow)
        if ended:
            self._ended(stream)

    def on_reset(self, sid: int, code: int) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None:
            if stream.ex is not None and not stream.ex.response_done:
                self._count_abuse("streams reset while being served")
            stream.gone("client reset the stream")
            self._idle_check()

    def on_window(self, sid: int) -> None:
        if sid:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.window_opened()
        else:
            self._windows_opened()

    def on_settings(self, changed: dict[int, int]) -> None:
        self._count_abuse("SETTINGS flood")
        if INITIAL_WINDOW_SIZE in changed:
            self._windows_opened()

    def on_ping(self) -> None:
        self._count_abuse("PING flood")

    def on_goaway(self, last_sid: int, code: int) -> None:
        # The client is leaving: streams in progress may finish, no new ones come.
        self.goaway(NO_ERROR)
        self._idle_check()

    def _count_abuse(self, what: str) -> None:
        now = self.ctx.loop.time()
        if now - self._abuse_window >= 1.0:
            self._abuse_window = now
            self._abuse = 0
        self._abuse += 1
        if self._abuse > self.ctx.limits.h2_max_abuse_per_second:
            self._fail(ENHANCE_YOUR_CALM, what)

    def upgraded(self, method: bytes, target: bytes, headers: HeaderList) -> None:
        """Serve the HTTP/1.1 request that asked for the upgrade as stream 1 (its body, if
        it had one, was refused before the 101: the stream is half-closed)."""
        fields: HeaderList = [(b":method", method), (b":path", target)]
        fields += [(name.lower(), value) for name, value in headers]
        self._open(1, fields, ended=True)

    def _open(self, sid: int, fields: HeaderList, ended: bool) -> None:
        if self.goaway_sent or self.ctx.closing or len(self.streams) >= self.max_streams:
            self.h2.reset_stream(sid, REFUSED_STREAM)
            return
        self.last_stream = max(self.last_stream, sid)
        stream = H2Stream(self, sid)
        ex = H2Exchange(stream)
        stream.ex = ex
        self.streams[sid] = stream
        try:
            read_head(ex, fields)
        except BadRequest as exc:
            ex.preset_error = exc
        if ended:
            stream.remote_ended = True
            ex.body_complete = True
        elif ex.content_length is None:
            ex.chunked = True  # a body of unknown length follows, as HTTP/1.1's chunked
        elif ex.content_length == 0:
            ex.body_complete = True
        ex.started_at = self.ctx.loop.time()
        ex.dispatched = False
        serve(self.ctx, ex)

    def _body(self, stream: H2Stream, data: bytes, flow_controlled: int) -> None:
        ex = stream.ex
        limit = self.ctx.limits.max_body_bytes
        if ex is not None and limit is not None and ex.body_received + len(data) > limit:
            ex.body_failed(PayloadTooLarge("request body too large"))
            self.acknowledge(stream.sid, flow_controlled)
            return
        stream.received(data, flow_controlled)

    def _ended(self, stream: H2Stream) -> None:
        stream.remote_ended = True
        ex = stream.ex
        if ex is not None:
            ex.body_complete = True
            ex.wake_body()

    # ----------------------------------------------------------------- output

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def flush(self) -> None:
        """Write what the codec has queued, now."""
        self._flush_due = False
        data = self.h2.data_to_send()
        if data:
            self._write(data)

    def _flush(self) -> None:
        """Write what the codec has queued at the end of this loop iteration: the frames of one
        turn (a request's HEADERS, DATA, WINDOW_UPDATE, several streams') leave in one
        write instead of one each."""
        if not self._flush_due:
            self._flush_due = True
            self.ctx.loop.call_soon(self._flush_if_due)

    def _flush_if_due(self) -> None:
        if self._flush_due:
            self.flush()

    def acknowledge(self, sid: int, n: int) -> None:
        """Reopen the windows by ``n`` bytes the handler took (stream and connection)."""
        if n and not self.closed:
            self.h2.acknowledge(sid, n)
            self._flush()

    def send_headers(self, sid: int, fields: HeaderList, end: bool) -> None:
        if self.closed:
            return
        self.h2.send_headers(sid, fields, end)
        self._flush()
        if end:
            self._local_end(sid)

    def send_data(self, sid: int, data: bytes) -> int:
        """Send as much of ``data`` as the windows allow; returns how much that was."""
        if self.closed or sid not in self.h2.streams:
            return len(data)
        sent = self.h2.send_data(sid, data)
        self._flush()
        return sent

    def end_stream(self, sid: int) -> None:
        if self.closed:
            return
        self.h2.end_stream(sid)
        self._flush()
        self._local_end(sid)

    def _local_end(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            stream.local_ended = True

    def reset(self, stream: H2Stream, code: int) -> None:
        self.streams.pop(stream.sid, None)
        if not self.closed:
            self.h2.reset_stream(stream.sid, code)
            self._flush()
        stream.gone("stream reset")
        self._idle_check()

    def stream_over(self, stream: H2Stream) -> None:
        """The stream's exchange is answered and its owner done: forget the stream. A
        request body still coming is refused with RST_STREAM NO_ERROR (RFC 9113 8.1)."""
        if self.streams.get(stream.sid) is not stream:
            return
        if not stream.local_ended:
            self.reset(stream, CANCEL)
            return
        if not stream.remote_ended:
            self.reset(stream, NO_ERROR)
            return
        del self.streams[stream.sid]
        stream.closed = True
        stream.release()
        self._idle_check()

    def _idle_check(self) -> None:
        if not self.streams:
            self.idle_since = self.ctx.loop.time()
            if (self.goaway_sent or self.ctx.closing) and not self.closed:
                self.close()

    def _windows_opened(self) -> None:
        for stream in list(self.streams.values()):
            stream.window_opened()

    # ------------------------------------------------------------ flow control

    def pause_writing(self) -> None:
        # The client is not reading: stop reading it too (nothing it sends can then make
        # the server queue replies), and pause every stream's upstream.
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()
        for stream in self.streams.values():
            if stream.flow_listener is not None:
                stream.flow_listener.flow(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self._windows_opened()

    def eof_received(self) -> bool:
        if self.closed:
            return False  # lingering after an error (``_linger``): the close is now
        # A half-closed HTTP/2 client sends nothing more, not even RST_STREAM: the
        # responses in progress still go out, then the connection closes.
        self.goaway(NO_ERROR)
        self._idle_check()
        return True


def serve_h2(
    ctx: ServerContext,
    transport: asyncio.Transport,
    data: bytes,
    upgrade: tuple[bytes, bytes, bytes, HeaderList] | None = None,
) -> H2ServerProtocol:
    """Switch ``transport`` to HTTP/2. ``data`` is a fresh connection's first bytes (prior
    knowledge), or the bytes after the 101 that answered ``Upgrade: h2c``; then ``upgrade``
    is (HTTP2-Settings, method, target, headers) of that request, served as stream 1."""
    proto = H2ServerProtocol(ctx)
    transport.set_protocol(proto)
    proto.connection_made(transport)
    if upgrade is None:
        proto.start()
    else:
        settings, method, target, headers = upgrade
        proto.start(settings)
        proto.upgraded(method, target, headers)
    if data:
        proto.data_received(data)
    else:
        proto.flush()
    return proto
