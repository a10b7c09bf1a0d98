"""One HTTP/2 connection's protocol state, sans-IO: frames, streams and flow control.

``H2Codec`` takes the bytes a peer sent (``receive``) and calls its ``H2Handler`` for what
they mean; it queues the frames the engine sends (``send_headers``, ``send_data``...) until
``data_to_send``. ``proxy.http2`` (the server side) and ``proxy.h2client`` (the upstream
side) are its two handlers. HPACK and header checks are ``proxy.h2hpack``'s.

Why the engine's own codec rather than the ``h2`` library (docs/design.md, "HTTP/2"): h2's
per-frame work (hyperframe objects, its two state machines, events, a repr of every frame
received, header validation through generator chains) cost about 190 µs of CPU per proxied
request, more than Knative's whole Go queue-proxy spends on one (bench.h2load, py-spy). This
codec keeps the rules (RFC 9113; h2spec's cases, tests/conformance/test_h2spec.py) and does
per frame only what the frame needs.

Errors: a connection error queues GOAWAY with its code and raises ``H2Error`` out of
``receive`` (the codec then ignores further input); a stream error queues RST_STREAM and,
for a stream the handler knows, calls ``on_reset``.
"""

from __future__ import annotations

import base64
import struct
from collections import OrderedDict
from typing import Protocol

from proxy.h2hpack import (
    IGNORED,
    REQUEST,
    RESPONSE,
    TRAILERS,
    BlockDecoder,
    HeaderError,
    StaticEncoder,
)
from proxy.headers import HeaderList

__all__ = [
    "PREFACE",
    "H2Codec",
    "H2Error",
    "H2Handler",
    "check_settings",
    "decode_settings",
    "settings_payload",
]

#: What a client sends first (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, ENHANCE_YOUR_CALM = 0x5, 0x6, 0xB

# SETTINGS identifiers (RFC 9113 section 6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
#: The largest frame payload this side accepts (it never raises SETTINGS_MAX_FRAME_SIZE).
MAX_INBOUND_FRAME = 16384
#: Closed streams remembered: frames already on their way to a stream this side reset are
#: dropped quietly, those to a stream closed otherwise are the peer's error.
_CLOSED_MEMORY = 1024
#: CONTINUATION frames one header block may take (a flood of empty ones costs CPU only).
_MAX_CONTINUATIONS = 64

_HEAD = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")


class H2Error(Exception):
    """A connection error: the GOAWAY with ``code`` is queued."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _StreamError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class H2Handler(Protocol):
    """What a connection's frames mean, called from ``H2Codec.receive``."""

    def on_headers(self, sid: int, fields: HeaderList, ended: bool) -> None:
        """A request (server side) or a final response head (client side)."""

    def on_informational(self, sid: int, fields: HeaderList) -> None:
        """A 1xx response head (client side)."""

    def on_trailers(self, sid: int, fields: HeaderList) -> None:
        """Trailers: the stream's last HEADERS (its end follows as ``on_data`` ended)."""

    def on_data(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        """Body bytes (``flow``: what they cost the windows, padding included)."""

    def on_reset(self, sid: int, code: int) -> None:
        """The stream is gone: reset by the peer, or by a stream error."""

    def on_window(self, sid: int) -> None:
        """A window opened: stream ``sid``'s, or (0) the connection's."""

    def on_settings(self, changed: dict[int, int]) -> None:
        """The peer's SETTINGS (already applied and acknowledged)."""

    def on_ping(self) -> None:
        """A PING (already answered)."""

    def on_goaway(self, last_sid: int, code: int) -> None:
        """The peer is leaving: streams above ``last_sid`` were not processed."""


class _Stream:
    __slots__ = (
        "expected",
        "got_head",
        "local_open",
        "received",
        "recv_unacked",
        "recv_window",
        "remote_open",
        "send_window",
        "unconsumed",
    )

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unacked = 0
        #: Bytes received the engine has not acknowledged: the connection's window gets
        #: them back when the stream is forgotten (nobody will acknowledge them then).
        self.unconsumed = 0
        self.local_open = True
        self.remote_open = True
        #: Whether a (final) head came: further HEADERS are trailers.
        self.got_head = False
        #: The peer's Content-Length and the body bytes so far (server side).
        self.expected: int | None = None
        self.received = 0


class H2Codec:
    """One connection (the module docstring). ``window`` is this side's initial stream
    window; the connection's is four times as large, so that a few streams whose readers
    stall (each holding at most a window unacknowledged) leave room for the others."""

    def __init__(
        self,
        handler: H2Handler,
        client_side: bool,
        window: int = DEFAULT_WINDOW,
        max_header_list_size: int = 65536,
        max_streams: int | None = None,
    ) -> None:
        self.handler = handler
        self.client_side = client_side
        self.window = window
        self.conn_window = max(DEFAULT_WINDOW, 4 * window)
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self.goaway_received = False
        # The peer's settings that matter here.
        self.peer_max_streams = 1 << 31
        self.peer_window = DEFAULT_WINDOW
        self.max_outbound_frame_size = 16384
        self.settled = False  # whether the peer's first SETTINGS arrived
        self.send_window = DEFAULT_WINDOW
        self.recv_window = DEFAULT_WINDOW
        self._recv_unacked = 0
        self.last_peer_sid = 0
        self.next_sid = 1 if client_side else 2
        self._encoder = StaticEncoder()
        self._decoder = BlockDecoder(max_header_list_size)
        self._out: list[bytes] = []
        self._buf = b""
        self._need_preface = not client_side
        self._block: tuple[int, int, list[bytes]] | None = None  # sid, flags, fragments
        self._continuations = 0
        #: Recently closed streams: whether this side reset them; and those the peer reset.
        self._closed: OrderedDict[int, bool] = OrderedDict()
        self._peer_reset: OrderedDict[int, None] = OrderedDict()
        settings = {MAX_HEADER_LIST_SIZE: max_header_list_size, ENABLE_PUSH: 0}
        if window != DEFAULT_WINDOW:
            settings[INITIAL_WINDOW_SIZE] = window
        if max_streams is not None:
            settings[MAX_CONCURRENT_STREAMS] = max_streams
        if client_side:
            self._out.append(PREFACE)
        self._frame(SETTINGS, 0, 0, settings_payload(settings))
        if self.conn_window > DEFAULT_WINDOW:
            self.recv_window = self.conn_window
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.conn_window - DEFAULT_WINDOW))

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        self._out.append(_HEAD.pack(n >> 8, n & 0xFF, kind, flags, sid))
        if n:
            self._out.append(payload)

    def new_stream(self) -> int:
        """Open the next client stream (its HEADERS go with ``send_headers``)."""
        sid = self.next_sid
        self.next_sid += 2
        self.streams[sid] = _Stream(self.peer_window, self.window)
        return sid

    def send_headers(self, sid: int, fields: HeaderList, end: bool = False) -> None:
        """A stream's HEADERS (request, response or trailers); nothing if it cannot send."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open or self.closed:
            return
        block = self._encoder.encode(fields)
        size = self.max_outbound_frame_size
        flags = END_STREAM if end else 0
        if len(block) <= size:
            self._frame(HEADERS, flags | END_HEADERS, sid, block)
        else:
            self._frame(HEADERS, flags, sid, block[:size])
            for at in range(size, len(block), size):
                last = at + size >= len(block)
                self._frame(CONTINUATION, END_HEADERS if last else 0, sid, block[at : at + size])
        if end:
            self._local_end(sid, stream)

    def room(self, sid: int) -> int:
        """Bytes stream ``sid`` may send now (its window and the connection's)."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open or self.closed:
            return 0
        return max(0, min(self.send_window, stream.send_window))

    def send_data(self, sid: int, data: bytes, end: bool = False) -> int:
        """Send as much of ``data`` as the windows allow (and END_STREAM after all of it,
        if ``end`` and it all fitted); returns how much was sent."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open or self.closed:
            return 0
        n = min(len(data), self.send_window, stream.send_window)
        if n < 0:
            n = 0
        size = self.max_outbound_frame_size
        at = 0
        while at < n:
            piece = data[at : min(n, at + size)]
            at += len(piece)
            last = end and at == len(data)
            self._frame(DATA, END_STREAM if last else 0, sid, piece)
        self.send_window -= n
        stream.send_window -= n
        if end and n == len(data):
            if not data:
                self._frame(DATA, END_STREAM, sid, b"")
            self._local_end(sid, stream)
        return n

    def end_stream(self, sid: int) -> None:
        self.send_data(sid, b"", end=True)

    def _local_end(self, sid: int, stream: _Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            self._forget(sid, False)

    def reset_stream(self, sid: int, code: int) -> None:
        """RST_STREAM ``code``: the stream is forgotten (frames still coming are dropped)."""
        if self.closed:
            return
        self._frame(RST_STREAM, 0, sid, _U32.pack(code))
        self._forget(sid, True)

    def _forget(self, sid: int, by_us: bool) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.unconsumed:
            self._conn_ack(stream.unconsumed)
        closed = self._closed
        closed[sid] = by_us
        if len(closed) > _CLOSED_MEMORY:
            closed.popitem(last=False)

    def acknowledge(self, sid: int, n: int) -> None:
        """The engine took ``n`` bytes of stream ``sid``: reopen its windows, in
        WINDOW_UPDATEs of at least a quarter of a window (fewer frames). Bytes of a stream
        already forgotten were given back then."""
        stream = self.streams.get(sid)
        if n <= 0 or self.closed or stream is None:
            return
        n = min(n, stream.unconsumed)
        stream.unconsumed -= n
        if stream.remote_open:
            stream.recv_unacked += n
            if stream.recv_unacked >= self.window // 4:
                stream.recv_window += stream.recv_unacked
                self._frame(WINDOW_UPDATE, 0, sid, _U32.pack(stream.recv_unacked))
                stream.recv_unacked = 0
        self._conn_ack(n)

    def _conn_ack(self, n: int) -> None:
        self._recv_unacked += n
        if self._recv_unacked >= self.conn_window // 4 and not self.closed:
            self.recv_window += self._recv_unacked
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked))
            self._recv_unacked = 0

    def goaway(self, code: int, last_sid: int | None = None) -> None:
        """GOAWAY: gracefully (NO_ERROR) the streams open still finish; an error code
        ends the connection (no more input is read)."""
        if self.closed:
            return
        last = self.last_peer_sid if last_sid is None else last_sid
        self._frame(GOAWAY, 0, 0, _U32.pack(last) + _U32.pack(code))
        if code != NO_ERROR:
            self.closed = True

    def upgraded(self, http2_settings: bytes) -> None:
        """Server side after ``Upgrade: h2c``: the client's HTTP2-Settings apply, and
        stream 1 (the request that asked) is open, its request side complete."""
        raw = base64.urlsafe_b64decode(http2_settings + b"=" * (-len(http2_settings) % 4))
        self._apply_settings(decode_settings(raw))
        self.settled = True
        stream = _Stream(self.peer_window, self.window)
        stream.remote_open = False
        self.streams[1] = stream
        self.last_peer_sid = 1

    # ------------------------------------------------------------------- input

    def receive(self, data: bytes) -> None:
        """Handle ``data`` from the peer; raises ``H2Error`` on a connection error."""
        if self.closed:
            return
        try:
            self._receive(data)
        except H2Error as exc:
            self.goaway(exc.code)
            self.closed = True
            raise

    def _receive(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        if self._need_preface:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(buf):
                    raise H2Error(PROTOCOL_ERROR, "invalid connection preface")
                self._buf = buf
                return
            if not buf.startswith(PREFACE):
                raise H2Error(PROTOCOL_ERROR, "invalid connection preface")
            self._need_preface = False
            pos = len(PREFACE)
        end = len(buf)
        while end - pos >= 9 and not self.closed:
            hi, lo, kind, flags, sid = _HEAD.unpack_from(buf, pos)
            length = hi << 8 | lo
            if length > MAX_INBOUND_FRAME:
                raise H2Error(FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos - 9 < length:
                break
            payload = buf[pos + 9 : pos + 9 + length]
            pos += 9 + length
            self._frame_in(kind, flags, sid & 0x7FFFFFFF, payload)
        self._buf = buf[pos:] if pos < end else b""

    def _frame_in(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if not self.settled and kind != SETTINGS:
            raise H2Error(PROTOCOL_ERROR, "the first frame is not SETTINGS")
        if self._block is not None and (kind != CONTINUATION or sid != self._block[0]):
            raise H2Error(PROTOCOL_ERROR, "header block interrupted")
        try:
            if kind == DATA:
                self._data(flags, sid, payload)
            elif kind == HEADERS:
                self._headers(flags, sid, payload)
            elif kind == CONTINUATION:
                self._continuation(flags, sid, payload)
            elif kind == WINDOW_UPDATE:
                self._window_update(sid, payload)
            elif kind == RST_STREAM:
                self._rst_stream(sid, payload)
            elif kind == SETTINGS:
                self._settings(flags, sid, payload)
            elif kind == PING:
                self._ping(flags, sid, payload)
            elif kind == GOAWAY:
                self._goaway(sid, payload)
            elif kind == PRIORITY:
                self._priority(sid, payload)
            elif kind == PUSH_PROMISE:
                raise H2Error(PROTOCOL_ERROR, "PUSH_PROMISE is not enabled")
            # Unknown frame types are ignored (RFC 9113 section 4.1).
        except _StreamError as exc:
            self._stream_error(sid, exc.code)

    def _stream_error(self, sid: int, code: int) -> None:
        known = sid in self.streams
        self.reset_stream(sid, code)
        if known:
            self.handler.on_reset(sid, code)

    def _idle(self, sid: int) -> bool:
        """Whether ``sid`` was never opened."""
        if (sid & 1) == (1 if self.client_side else 0):  # ours
            return sid >= self.next_sid
        return sid > self.last_peer_sid

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload:
                raise H2Error(FRAME_SIZE_ERROR, "padded frame without a pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise H2Error(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 : len(payload) - pad]
        return payload

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flow > self.recv_window:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= flow
        data = self._unpad(flags, payload)
        stream = self.streams.get(sid)
        if stream is None or not stream.remote_open:
            self._conn_ack(flow)  # nobody will take these bytes: the window goes back
            if stream is not None:
                raise _StreamError(STREAM_CLOSED, "DATA after END_STREAM")
            if self._idle(sid):
                raise H2Error(PROTOCOL_ERROR, "DATA on an idle stream")
            self._on_closed(sid, "DATA")
            return
        if not stream.got_head:
            raise H2Error(PROTOCOL_ERROR, "DATA before HEADERS")
        if flow > stream.recv_window:
            self._conn_ack(flow)
            raise _StreamError(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window -= flow
        stream.unconsumed += flow
        ended = bool(flags & END_STREAM)
        if stream.expected is not None:
            stream.received += len(data)
            if stream.received > stream.expected or (ended and stream.received != stream.expected):
                raise _StreamError(PROTOCOL_ERROR, "body length differs from Content-Length")
        if ended:
            self._remote_end(sid, stream)
        self.handler.on_data(sid, data, flow, ended)

    def _remote_end(self, sid: int, stream: _Stream) -> None:
        stream.remote_open = False
        if not stream.local_open:
            self._forget(sid, False)

    def _on_closed(self, sid: int, what: str) -> None:
        """A frame for closed stream ``sid``: dropped if this side reset it (it may have
        been on its way), the peer's error otherwise (RFC 9113 section 5.1)."""
        by_us = self._closed.get(sid)
        if by_us:
            return
        if by_us is None:  # never opened, or long forgotten
            raise H2Error(PROTOCOL_ERROR, f"{what} on a stream never opened")
        if sid in self._peer_reset:
            raise _StreamError(STREAM_CLOSED, f"{what} after RST_STREAM")
        raise H2Error(STREAM_CLOSED, f"{what} on a closed stream")

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(fragment) < 5:
                raise H2Error(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if _U32.unpack_from(fragment)[0] & 0x7FFFFFFF == sid:
                self._decode_later(sid, flags, fragment[5:], depends_on_itself=True)
                return
            fragment = fragment[5:]
        self._decode_later(sid, flags, fragment)

    def _decode_later(
        self, sid: int, flags: int, fragment: bytes, depends_on_itself: bool = False
    ) -> None:
        if depends_on_itself:
            flags |= 0x100  # remembered until the block is decoded (its table must be)
        if flags & END_HEADERS:
            self._block_done(sid, flags, fragment)
        else:
            self._block = (sid, flags, [fragment])
            self._continuations = 0

    def _continuation(self, flags: int, sid: int, payload: bytes) -> None:
        block = self._block
        if block is None:
            raise H2Error(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        fragments = block[2]
        fragments.append(payload)
        self._continuations += 1
        if self._continuations > _MAX_CONTINUATIONS or sum(map(len, fragments)) > 2 * max(
            self._decoder.limit, MAX_INBOUND_FRAME
        ):
            raise H2Error(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._block = None
            self._block_done(sid, block[1], b"".join(fragments))

    def _block_done(self, sid: int, flags: int, block: bytes) -> None:
        stream = self.streams.get(sid)
        ended = bool(flags & END_STREAM)
        if stream is None:
            self._new_stream_block(sid, flags, block, ended)
            return
        if not stream.remote_open:
            self._decode(block, IGNORED)  # keeps the table in step
            raise _StreamError(STREAM_CLOSED, "HEADERS after END_STREAM")
        if flags & 0x100:
            self._decode(block, IGNORED)
            raise _StreamError(PROTOCOL_ERROR, "stream depends on itself")
        if not stream.got_head and self.client_side:
            fields = self._decode(block, RESPONSE)[0]
            status = next(v for n, v in fields if n == b":status")
            if status[:1] == b"1":
                if ended or status == b"101":
                    raise _StreamError(PROTOCOL_ERROR, "invalid informational response")
                self.handler.on_informational(sid, fields)
                return
            stream.got_head = True
            if ended:
                self._remote_end(sid, stream)
            self.handler.on_headers(sid, fields, ended)
            return
        fields = self._decode(block, TRAILERS)[0]
        if not ended:
            raise _StreamError(PROTOCOL_ERROR, "trailers without END_STREAM")
        if stream.expected is not None and stream.received != stream.expected:
            raise _StreamError(PROTOCOL_ERROR, "body length differs from Content-Length")
        self._remote_end(sid, stream)
        self.handler.on_trailers(sid, fields)
        self.handler.on_data(sid, b"", 0, True)

    def _new_stream_block(self, sid: int, flags: int, block: bytes, ended: bool) -> None:
        ours = (sid & 1) == (1 if self.client_side else 0)
        if self.client_side or ours or sid <= self.last_peer_sid:
            self._decode(block, IGNORED)  # keeps the table in step
            if ours != self.client_side or self._idle(sid):
                raise H2Error(PROTOCOL_ERROR, "HEADERS opening a stream out of turn")
            self._on_closed(sid, "HEADERS")
            return
        self.last_peer_sid = sid
        stream = _Stream(self.peer_window, self.window)
        self.streams[sid] = stream
        try:
            fields, length = self._decode(block, REQUEST)
            if flags & 0x100:
                raise _StreamError(PROTOCOL_ERROR, "stream depends on itself")
        except _StreamError:
            del self.streams[sid]
            raise
        stream.got_head = True
        stream.expected = length
        if ended:
            if length:
                del self.streams[sid]
                raise _StreamError(PROTOCOL_ERROR, "body length differs from Content-Length")
            stream.remote_open = False
        self.handler.on_headers(sid, fields, ended)

    def _decode(self, block: bytes, kind: int) -> tuple[HeaderList, int | None]:
        try:
            return self._decoder.decode(block, kind)
        except HeaderError as exc:
            if exc.fatal:
                raise H2Error(exc.code, str(exc)) from exc
            raise _StreamError(PROTOCOL_ERROR, str(exc)) from exc

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self.handler.on_window(0)
            return
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if increment == 0:
            raise _StreamError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise _StreamError(FLOW_CONTROL_ERROR, "stream window above 2^31-1")
        self.handler.on_window(sid)

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if self._idle(sid):
            raise H2Error(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if sid in self.streams:
            self._forget(sid, False)
            self._peer_reset[sid] = None
            if len(self._peer_reset) > _CLOSED_MEMORY:
                self._peer_reset.popitem(last=False)
            self.handler.on_reset(sid, _U32.unpack(payload)[0])

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2Error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if not self.settled:
                raise H2Error(PROTOCOL_ERROR, "the first frame is not SETTINGS")
            return
        try:
            values = decode_settings(payload)
        except ValueError as exc:
            raise H2Error(FRAME_SIZE_ERROR, str(exc)) from exc
        self._apply_settings(values)
        self.settled = True
        self._frame(SETTINGS, ACK, 0, b"")
        self.handler.on_settings(values)

    def _apply_settings(self, values: dict[int, int]) -> None:
        check_settings(values)
        for key, value in values.items():
            if key == INITIAL_WINDOW_SIZE:
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2Error(FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
            elif key == MAX_FRAME_SIZE:
                self.max_outbound_frame_size = value
            elif key == MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == HEADER_TABLE_SIZE:
                self._encoder.size_updates.append(value)

    def _ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2Error(FRAME_SIZE_ERROR, "PING of the wrong size")
        if not flags & ACK:
            self._frame(PING, ACK, 0, payload)
            self.handler.on_ping()

    def _goaway(self, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2Error(FRAME_SIZE_ERROR, "GOAWAY too short")
        last = _U32.unpack_from(payload)[0] & 0x7FFFFFFF
        self.goaway_received = True
        self.handler.on_goaway(last, _U32.unpack_from(payload, 4)[0])

    def _priority(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise _StreamError(FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            raise _StreamError(PROTOCOL_ERROR, "stream depends on itself")


def settings_payload(values: dict[int, int]) -> bytes:
    """A SETTINGS frame's payload."""
    return b"".join(_SETTING.pack(key, value) for key, value in values.items())


def check_settings(values: dict[int, int]) -> None:
    """Raise ``H2Error`` if a SETTINGS value is out of its range (RFC 9113 6.5.2)."""
    for key, value in values.items():
        if key == ENABLE_PUSH and value > 1:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1")
        if key == INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise H2Error(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
        if key == MAX_FRAME_SIZE and not 16384 <= value <= 2**24 - 1:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")


def decode_settings(payload: bytes) -> dict[int, int]:
    """A SETTINGS payload's values; raises ``ValueError``."""
    if len(payload) % 6:
        raise ValueError("SETTINGS payload not a multiple of 6 bytes")
    return dict(_SETTING.iter_unpack(payload))
