"""HTTP/2's wire format as the engine's codec uses it (RFC 9113): frame types, flags, error
codes and SETTINGS; the codec's errors and the handler it calls (``H2Handler``); and one
stream's state (``StreamState``). The codec itself is ``proxy.h2out`` (what this side sends)
and ``proxy.h2codec`` (what the peer sent)."""

from __future__ import annotations

import struct
from typing import Protocol

from proxy.headers import HeaderList

__all__ = [
    "PREFACE",
    "H2Error",
    "H2Handler",
    "StreamError",
    "StreamState",
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
CLOSED_MEMORY = 1024

FRAME_HEAD = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id
U32 = struct.Struct(">L")
SETTING = struct.Struct(">HL")


class H2Error(Exception):
    """A connection error: the GOAWAY with ``code`` is queued."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamError(Exception):
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


class StreamState:
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


def settings_payload(values: dict[int, int]) -> bytes:
    """A SETTINGS frame's payload."""
    return b"".join(SETTING.pack(key, value) for key, value in values.items())


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
    return dict(SETTING.iter_unpack(payload))
