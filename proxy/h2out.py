"""The sending half of an HTTP/2 connection, sans-IO (``H2Output``): the frames this side
queues until ``data_to_send``, the streams' states, and the flow-control bookkeeping both
ways (the windows this side may send into, and the WINDOW_UPDATEs it gives back).
``proxy.h2codec.H2Codec`` adds the receiving half; see there for the whole."""

from __future__ import annotations

from collections import OrderedDict

from proxy.h2frames import (
    CLOSED_MEMORY,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    FRAME_HEAD,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    NO_ERROR,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    U32,
    WINDOW_UPDATE,
    H2Handler,
    StreamState,
    settings_payload,
)
from proxy.h2hpack import BlockDecoder, StaticEncoder
from proxy.headers import HeaderList

__all__ = ["H2Output"]


class H2Output:
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
        self.streams: dict[int, StreamState] = {}
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
        self.encoder = StaticEncoder()
        self._decoder = BlockDecoder(max_header_list_size)
        self._out: list[bytes] = []
        self._buf = b""
        self._need_preface = not client_side
        self._block: tuple[int, int, list[bytes]] | None = None  # sid, flags, fragments
        self._continuations = 0
        #: Recently closed streams: whether this side reset them; and those the peer reset.
        self.closed_streams: OrderedDict[int, bool] = OrderedDict()
        self.peer_reset: OrderedDict[int, None] = OrderedDict()
        settings = {MAX_HEADER_LIST_SIZE: max_header_list_size, ENABLE_PUSH: 0}
        if window != DEFAULT_WINDOW:
            settings[INITIAL_WINDOW_SIZE] = window
        if max_streams is not None:
            settings[MAX_CONCURRENT_STREAMS] = max_streams
        if client_side:
            self._out.append(PREFACE)
        self.queue_frame(SETTINGS, 0, 0, settings_payload(settings))
        if self.conn_window > DEFAULT_WINDOW:
            self.recv_window = self.conn_window
            self.queue_frame(WINDOW_UPDATE, 0, 0, U32.pack(self.conn_window - DEFAULT_WINDOW))

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    def queue_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        self._out.append(FRAME_HEAD.pack(n >> 8, n & 0xFF, kind, flags, sid))
        if n:
            self._out.append(payload)

    def new_stream(self) -> int:
        """Open the next client stream (its HEADERS go with ``send_headers``)."""
        sid = self.next_sid
        self.next_sid += 2
        self.streams[sid] = StreamState(self.peer_window, self.window)
        return sid

    def send_headers(self, sid: int, fields: HeaderList, end: bool = False) -> None:
        """A stream's HEADERS (request, response or trailers); nothing if it cannot send."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open or self.closed:
            return
        block = self.encoder.encode(fields)
        size = self.max_outbound_frame_size
        flags = END_STREAM if end else 0
        if len(block) <= size:
            self.queue_frame(HEADERS, flags | END_HEADERS, sid, block)
        else:
            self.queue_frame(HEADERS, flags, sid, block[:size])
            for at in range(size, len(block), size):
                flags = END_HEADERS if at + size >= len(block) else 0
                self.queue_frame(CONTINUATION, flags, sid, block[at : at + size])
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
            self.queue_frame(DATA, END_STREAM if last else 0, sid, piece)
        self.send_window -= n
        stream.send_window -= n
        if end and n == len(data):
            if not data:
                self.queue_frame(DATA, END_STREAM, sid, b"")
            self._local_end(sid, stream)
        return n

    def end_stream(self, sid: int) -> None:
        self.send_data(sid, b"", end=True)

    def _local_end(self, sid: int, stream: StreamState) -> None:
        stream.local_open = False
        if not stream.remote_open:
            self.forget(sid, False)

    def reset_stream(self, sid: int, code: int) -> None:
        """RST_STREAM ``code``: the stream is forgotten (frames still coming are dropped)."""
        if self.closed:
            return
        self.queue_frame(RST_STREAM, 0, sid, U32.pack(code))
        self.forget(sid, True)

    def forget(self, sid: int, by_us: bool) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.unconsumed:
            self.give_back(stream.unconsumed)
        closed = self.closed_streams
        closed[sid] = by_us
        if len(closed) > CLOSED_MEMORY:
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
                self.queue_frame(WINDOW_UPDATE, 0, sid, U32.pack(stream.recv_unacked))
                stream.recv_unacked = 0
        self.give_back(n)

    def give_back(self, n: int) -> None:
        self._recv_unacked += n
        if self._recv_unacked >= self.conn_window // 4 and not self.closed:
            self.recv_window += self._recv_unacked
            self.queue_frame(WINDOW_UPDATE, 0, 0, U32.pack(self._recv_unacked))
            self._recv_unacked = 0

    def goaway(self, code: int, last_sid: int | None = None) -> None:
        """GOAWAY: gracefully (NO_ERROR) the streams open still finish; an error code
        ends the connection (no more input is read)."""
        if self.closed:
            return
        last = self.last_peer_sid if last_sid is None else last_sid
        self.queue_frame(GOAWAY, 0, 0, U32.pack(last) + U32.pack(code))
        if code != NO_ERROR:
            self.closed = True
