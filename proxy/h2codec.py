"""One HTTP/2 connection's protocol state, sans-IO: frames, streams and flow control.

``H2Codec`` takes the bytes a peer sent (``receive``) and calls its ``H2Handler`` for what
they mean; it queues the frames the engine sends (``send_headers``, ``send_data``...) until
``data_to_send``. ``proxy.http2`` (the server side) and ``proxy.h2client`` (the upstream
side) are its two handlers. The sending half and the streams' bookkeeping are
``proxy.h2out.H2Output`` (its base class), the wire format ``proxy.h2frames``, HPACK and
header checks ``proxy.h2hpack``.

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

from proxy.h2frames import (
    ACK,
    CLOSED_MEMORY,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_HEAD,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_INBOUND_FRAME,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    U32,
    WINDOW_UPDATE,
    H2Error,
    StreamError,
    StreamState,
    check_settings,
    decode_settings,
)
from proxy.h2hpack import IGNORED, REQUEST, RESPONSE, TRAILERS, HeaderError
from proxy.h2out import H2Output
from proxy.headers import HeaderList

__all__ = ["H2Codec"]

#: CONTINUATION frames one header block may take (a flood of empty ones costs CPU only).
_MAX_CONTINUATIONS = 64
#: Kept with a header block's flags (above the frame's eight bits) when its HEADERS said the
#: stream depends on itself: a stream error, once the block is decoded (the dynamic table
#: must see it either way).
_SELF_DEPENDENT = 0x100


class H2Codec(H2Output):
    """One connection (the module docstring): ``H2Output``'s sending half, and the frames
    the peer sent (``receive``)."""

    # ------------------------------------------------------------------- input

    def upgraded(self, http2_settings: bytes) -> None:
        """Server side after ``Upgrade: h2c``: the client's HTTP2-Settings apply, and
        stream 1 (the request that asked) is open, its request side complete."""
        raw = base64.urlsafe_b64decode(http2_settings + b"=" * (-len(http2_settings) % 4))
        self._apply_settings(decode_settings(raw))
        self.settled = True
        stream = StreamState(self.peer_window, self.window)
        stream.remote_open = False
        self.streams[1] = stream
        self.last_peer_sid = 1

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
            hi, lo, kind, flags, sid = FRAME_HEAD.unpack_from(buf, pos)
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
        except StreamError as exc:
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
            self.give_back(flow)  # nobody will take these bytes: the window goes back
            if stream is not None:
                raise StreamError(STREAM_CLOSED, "DATA after END_STREAM")
            if self._idle(sid):
                raise H2Error(PROTOCOL_ERROR, "DATA on an idle stream")
            self._on_closed(sid, "DATA")
            return
        if not stream.got_head:
            raise H2Error(PROTOCOL_ERROR, "DATA before HEADERS")
        if flow > stream.recv_window:
            self.give_back(flow)
            raise StreamError(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window -= flow
        stream.unconsumed += flow
        ended = bool(flags & END_STREAM)
        if stream.expected is not None:
            stream.received += len(data)
            if stream.received > stream.expected or (ended and stream.received != stream.expected):
                raise StreamError(PROTOCOL_ERROR, "body length differs from Content-Length")
        if ended:
            self._remote_end(sid, stream)
        self.handler.on_data(sid, data, flow, ended)

    def _remote_end(self, sid: int, stream: StreamState) -> None:
        stream.remote_open = False
        if not stream.local_open:
            self.forget(sid, False)

    def _on_closed(self, sid: int, what: str) -> None:
        """A frame for closed stream ``sid``: dropped if this side reset it (it may have
        been on its way), the peer's error otherwise (RFC 9113 section 5.1)."""
        by_us = self.closed_streams.get(sid)
        if by_us:
            return
        if by_us is None:  # never opened, or long forgotten
            raise H2Error(PROTOCOL_ERROR, f"{what} on a stream never opened")
        if sid in self.peer_reset:
            raise StreamError(STREAM_CLOSED, f"{what} after RST_STREAM")
        raise H2Error(STREAM_CLOSED, f"{what} on a closed stream")

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(fragment) < 5:
                raise H2Error(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if U32.unpack_from(fragment)[0] & 0x7FFFFFFF == sid:
                flags |= _SELF_DEPENDENT
            fragment = fragment[5:]
        self._decode_later(sid, flags, fragment)

    def _decode_later(self, sid: int, flags: int, fragment: bytes) -> None:
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
            raise StreamError(STREAM_CLOSED, "HEADERS after END_STREAM")
        if flags & _SELF_DEPENDENT:
            self._decode(block, IGNORED)
            raise StreamError(PROTOCOL_ERROR, "stream depends on itself")
        if not stream.got_head and self.client_side:
            fields = self._decode(block, RESPONSE)[0]
            status = next(v for n, v in fields if n == b":status")
            if status[:1] == b"1":
                if ended or status == b"101":
                    raise StreamError(PROTOCOL_ERROR, "invalid informational response")
                self.handler.on_informational(sid, fields)
                return
            stream.got_head = True
            if ended:
                self._remote_end(sid, stream)
            self.handler.on_headers(sid, fields, ended)
            return
        fields = self._decode(block, TRAILERS)[0]
        if not ended:
            raise StreamError(PROTOCOL_ERROR, "trailers without END_STREAM")
        if stream.expected is not None and stream.received != stream.expected:
            raise StreamError(PROTOCOL_ERROR, "body length differs from Content-Length")
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
        stream = StreamState(self.peer_window, self.window)
        self.streams[sid] = stream
        try:
            fields, length = self._decode(block, REQUEST)
            if flags & _SELF_DEPENDENT:
                raise StreamError(PROTOCOL_ERROR, "stream depends on itself")
        except StreamError:
            del self.streams[sid]
            raise
        stream.got_head = True
        stream.expected = length
        if ended:
            if length:
                del self.streams[sid]
                raise StreamError(PROTOCOL_ERROR, "body length differs from Content-Length")
            stream.remote_open = False
        self.handler.on_headers(sid, fields, ended)

    def _decode(self, block: bytes, kind: int) -> tuple[HeaderList, int | None]:
        try:
            return self._decoder.decode(block, kind)
        except HeaderError as exc:
            if exc.fatal:
                raise H2Error(exc.code, str(exc)) from exc
            raise StreamError(PROTOCOL_ERROR, str(exc)) from exc

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = U32.unpack(payload)[0] & 0x7FFFFFFF
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
            raise StreamError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise StreamError(FLOW_CONTROL_ERROR, "stream window above 2^31-1")
        self.handler.on_window(sid)

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if self._idle(sid):
            raise H2Error(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if sid in self.streams:
            self.forget(sid, False)
            self.peer_reset[sid] = None
            if len(self.peer_reset) > CLOSED_MEMORY:
                self.peer_reset.popitem(last=False)
            self.handler.on_reset(sid, U32.unpack(payload)[0])

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
        self.queue_frame(SETTINGS, ACK, 0, b"")
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
                self.encoder.size_updates.append(value)

    def _ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2Error(FRAME_SIZE_ERROR, "PING of the wrong size")
        if not flags & ACK:
            self.queue_frame(PING, ACK, 0, payload)
            self.handler.on_ping()

    def _goaway(self, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2Error(FRAME_SIZE_ERROR, "GOAWAY too short")
        last = U32.unpack_from(payload)[0] & 0x7FFFFFFF
        self.goaway_received = True
        self.handler.on_goaway(last, U32.unpack_from(payload, 4)[0])

    def _priority(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise StreamError(FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
        if U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            raise StreamError(PROTOCOL_ERROR, "stream depends on itself")
