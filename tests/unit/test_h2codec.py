"""The engine's HTTP/2 codec (proxy.h2codec, proxy.h2hpack), sans-IO, against the ``h2``
library as an independent peer. h2spec's whole catalogue runs against the serving engine in
tests/conformance/test_h2spec.py; these are the codec's own rules, fast."""

from __future__ import annotations

import base64
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack.hpack import Encoder

from proxy.h2codec import H2Codec
from proxy.h2frames import PREFACE, H2Error, decode_settings, settings_payload
from proxy.h2hpack import (
    REQUEST,
    RESPONSE,
    TRAILERS,
    BlockDecoder,
    HeaderError,
    StaticEncoder,
    check_fields,
    encode_integer,
)

REQUEST_FIELDS = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"example.com"),
    (b":path", b"/"),
    (b"user-agent", b"test"),
]


class Recorder:
    """An ``H2Handler`` that writes down every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_headers(self, sid: int, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.calls.append(("headers", sid, list(fields), ended))

    def on_informational(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        self.calls.append(("informational", sid, list(fields)))

    def on_trailers(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        self.calls.append(("trailers", sid, list(fields)))

    def on_data(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        self.calls.append(("data", sid, data, flow, ended))

    def on_reset(self, sid: int, code: int) -> None:
        self.calls.append(("reset", sid, code))

    def on_window(self, sid: int) -> None:
        self.calls.append(("window", sid))

    def on_settings(self, changed: dict[int, int]) -> None:
        self.calls.append(("settings", dict(changed)))

    def on_ping(self) -> None:
        self.calls.append(("ping",))

    def on_goaway(self, last_sid: int, code: int) -> None:
        self.calls.append(("goaway", last_sid, code))

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


def h2_peer(client_side: bool) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    )
    conn.initiate_connection()
    return conn


def server_pair() -> tuple[H2Codec, Recorder, h2.connection.H2Connection]:
    """Our server codec connected to an h2 client, preface and SETTINGS exchanged."""
    rec = Recorder()
    server = H2Codec(rec, client_side=False, window=1 << 20, max_streams=10)
    client = h2_peer(client_side=True)
    server.receive(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive(client.data_to_send())  # the SETTINGS ACK
    rec.calls.clear()
    return server, rec, client


def client_pair() -> tuple[H2Codec, Recorder, h2.connection.H2Connection]:
    """Our client codec connected to an h2 server."""
    rec = Recorder()
    client = H2Codec(rec, client_side=True, window=1 << 20)
    server = h2_peer(client_side=False)
    server.receive_data(client.data_to_send())
    client.receive(server.data_to_send())
    server.receive_data(client.data_to_send())
    rec.calls.clear()
    return client, rec, server


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, kind, flags, sid) + payload


def goaway_code(data: bytes) -> int | None:
    """The error code of the GOAWAY among ``data``'s frames (None without one)."""
    pos = 0
    while pos + 9 <= len(data):
        hi, lo, kind, _, _ = struct.unpack_from(">HBBBL", data, pos)
        length = hi << 8 | lo
        if kind == 7:
            return int(struct.unpack_from(">L", data, pos + 13)[0])
        pos += 9 + length
    return None


def rst_codes(data: bytes) -> list[tuple[int, int]]:
    """(stream, code) of each RST_STREAM among ``data``'s frames."""
    found = []
    pos = 0
    while pos + 9 <= len(data):
        hi, lo, kind, _, sid = struct.unpack_from(">HBBBL", data, pos)
        length = hi << 8 | lo
        if kind == 3:
            found.append((sid, int(struct.unpack_from(">L", data, pos + 9)[0])))
        pos += 9 + length
    return found


# --- round trips ------------------------------------------------------------------------


def test_a_request_and_its_answer_between_the_server_codec_and_h2() -> None:
    server, rec, client = server_pair()
    client.send_headers(1, REQUEST_FIELDS, end_stream=True)
    server.receive(client.data_to_send())
    assert rec.calls == [("headers", 1, REQUEST_FIELDS, True)]
    server.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
    assert server.send_data(1, b"hello", end=True) == 5
    events = client.receive_data(server.data_to_send())
    kinds = [type(e) for e in events]
    assert kinds == [h2.events.ResponseReceived, h2.events.DataReceived, h2.events.StreamEnded]
    head, body = events[0], events[1]
    assert isinstance(head, h2.events.ResponseReceived)
    assert isinstance(body, h2.events.DataReceived)
    assert head.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert body.data == b"hello"
    assert server.streams == {}  # both sides ended: forgotten


def test_a_call_with_trailers_between_the_client_codec_and_h2() -> None:
    client, rec, server = client_pair()
    sid = client.new_stream()
    client.send_headers(sid, [*REQUEST_FIELDS[:4], (b"te", b"trailers")])
    client.send_data(sid, b"ping", end=True)
    events = server.receive_data(client.data_to_send())
    assert isinstance(events[0], h2.events.RequestReceived)
    assert any(isinstance(e, h2.events.DataReceived) and e.data == b"ping" for e in events)
    server.send_headers(sid, [(b":status", b"103"), (b"link", b"</a>")])
    server.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
    server.send_data(sid, b"pong")
    server.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    client.receive(server.data_to_send())
    assert rec.calls == [
        ("informational", sid, [(b":status", b"103"), (b"link", b"</a>")]),
        ("headers", sid, [(b":status", b"200"), (b"content-type", b"application/grpc")], False),
        ("data", sid, b"pong", 4, False),
        ("trailers", sid, [(b"grpc-status", b"0")]),
        ("data", sid, b"", 0, True),
    ]
    assert client.streams == {}


def test_header_blocks_larger_than_a_frame_go_in_continuation_frames_both_ways() -> None:
    big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(40)]  # about 40 KiB
    server, rec, client = server_pair()
    client.send_headers(1, REQUEST_FIELDS + big, end_stream=True)
    server.receive(client.data_to_send())
    assert rec.calls == [("headers", 1, REQUEST_FIELDS + big, True)]
    server.send_headers(1, [(b":status", b"200"), *big], end=True)
    head = client.receive_data(server.data_to_send())[0]
    assert isinstance(head, h2.events.ResponseReceived)
    assert head.headers == [(b":status", b"200"), *big]


def test_the_upgrade_makes_stream_1_the_request_that_asked() -> None:
    rec = Recorder()
    server = H2Codec(rec, client_side=False)
    settings = base64.urlsafe_b64encode(settings_payload({0x4: 100})).rstrip(b"=")
    server.upgraded(settings)
    assert server.room(1) == 100  # the client's HTTP2-Settings apply
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_upgrade_connection()
    server.receive(client.data_to_send())
    server.send_headers(1, [(b":status", b"200")], end=True)
    events = client.receive_data(server.data_to_send())
    assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert 1 not in server.streams


# --- flow control -----------------------------------------------------------------------


def test_data_waits_for_the_window_which_can_go_negative() -> None:
    server, rec, client = server_pair()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 3})
    client.send_headers(1, REQUEST_FIELDS, end_stream=True)
    server.receive(client.data_to_send())
    server.send_headers(1, [(b":status", b"200")])
    assert server.send_data(1, b"hello world") == 3
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2})
    client.receive_data(server.data_to_send())
    server.receive(client.data_to_send())
    assert server.room(1) == 0  # 2 - 3: the window is -1
    client.increment_flow_control_window(2, 1)
    server.receive(client.data_to_send())
    assert ("window", 1) in rec.calls
    assert server.send_data(1, b"lo world") == 1


def test_window_updates_go_out_a_quarter_window_at_a_time() -> None:
    server, _rec, client = server_pair()
    client.send_headers(1, [*REQUEST_FIELDS[:3], (b":path", b"/up")], end_stream=False)
    for _ in range(64):  # 1 MiB: the stream's whole window
        client.send_data(1, b"x" * 16384)
    server.receive(client.data_to_send())
    assert server.data_to_send() == b""
    server.acknowledge(1, 65536)
    assert server.data_to_send() == b""
    server.acknowledge(1, 196608)  # a quarter of the stream's window
    out = server.data_to_send()
    assert out == frame(8, 0, 1, struct.pack(">L", 262144))  # the stream's, not yet the conn's
    server.acknowledge(1, 786432)  # a quarter of the connection's 4 MiB
    events = client.receive_data(server.data_to_send())
    updated = {e.stream_id for e in events if isinstance(e, h2.events.WindowUpdated)}
    assert updated == {0, 1}


def test_data_beyond_the_windows_is_a_flow_control_error() -> None:
    server, rec = started_server()  # 64 KiB stream windows, 256 KiB for the connection
    fields = Encoder().encode([*REQUEST_FIELDS[:3], (b":path", b"/up")])
    for sid in (1, 3, 5, 7, 9, 11):
        server.receive(frame(1, 0x4, sid, fields))
    for _ in range(3):
        server.receive(frame(0, 0, 1, b"x" * 16384))
    server.receive(frame(0, 0, 1, b"x" * 16384))  # 65536 bytes: one beyond the stream's
    assert rst_codes(server.data_to_send()) == [(1, 0x3)]
    assert rec.calls[-1] == ("reset", 1, 0x3)
    with pytest.raises(H2Error) as err:  # and the connection's, over several streams
        for sid in (3, 5, 7, 9, 11):
            for _ in range(4):
                server.receive(frame(0, 0, sid, b"x" * 16000))
    assert err.value.code == 0x3
    assert goaway_code(server.data_to_send()) == 0x3


# --- errors -----------------------------------------------------------------------------


def started_server() -> tuple[H2Codec, Recorder]:
    rec = Recorder()
    server = H2Codec(rec, client_side=False)
    server.receive(PREFACE + frame(4, 0, 0, b""))
    server.data_to_send()
    rec.calls.clear()
    return server, rec


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0, 0, 0, b"nope"), 0x1),  # DATA on stream 0
        (frame(0, 0, 0, b"x" * 16385), 0x6),  # larger than SETTINGS_MAX_FRAME_SIZE
        (frame(8, 0, 0, struct.pack(">L", 2**31 - 1)), 0x3),  # connection window overflow
        (frame(8, 0, 0, b"\x00\x00\x00"), 0x6),  # WINDOW_UPDATE of 3 bytes
        (frame(1, 0x4, 2, Encoder().encode(REQUEST_FIELDS)), 0x1),  # even stream from a client
        (frame(1, 0x4, 1, b"\xff\xff\xff\xff"), 0x9),  # undecodable HPACK
        (frame(9, 0x4, 1, b""), 0x1),  # CONTINUATION without HEADERS
        (frame(4, 0, 0, settings_payload({0x2: 2})), 0x1),  # SETTINGS_ENABLE_PUSH 2
        (frame(4, 0, 0, settings_payload({0x4: 2**31})), 0x3),  # window above 2^31-1
        (frame(6, 0, 0, b"1234567"), 0x6),  # PING of 7 bytes
        (frame(3, 0, 7, struct.pack(">L", 8)), 0x1),  # RST_STREAM on an idle stream
        (frame(5, 0x4, 1, b"\x00\x00\x00\x02"), 0x1),  # PUSH_PROMISE from a client
        (frame(1, 0, 1, b"") + frame(9, 0, 1, b"") * 70, 0xB),  # a CONTINUATION flood
    ],
)
def test_connection_errors_send_goaway_with_their_code(data: bytes, code: int) -> None:
    server, _ = started_server()
    with pytest.raises(H2Error) as err:
        server.receive(data)
    assert err.value.code == code
    assert goaway_code(server.data_to_send()) == code
    server.receive(frame(6, 0, 0, b"12345678"))  # input after the error is ignored
    assert server.data_to_send() == b""


def test_a_bad_preface_is_a_protocol_error() -> None:
    server = H2Codec(Recorder(), client_side=False)
    with pytest.raises(H2Error):
        server.receive(b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize(
    "fields",
    [
        [*REQUEST_FIELDS, (b"User-Agent", b"upper")],
        [*REQUEST_FIELDS, (b"connection", b"close")],
        [*REQUEST_FIELDS, (b"te", b"gzip")],
        [*REQUEST_FIELDS, (b":method", b"GET")],
        [(b"x", b"1"), *REQUEST_FIELDS],  # pseudo-header after a regular field
        REQUEST_FIELDS[:3],  # no :path
        [*REQUEST_FIELDS, (b"x", b" padded")],
    ],
)
def test_a_malformed_request_is_a_stream_error_and_the_connection_lives(
    fields: list[tuple[bytes, bytes]],
) -> None:
    server, rec = started_server()
    server.receive(frame(1, 0x5, 1, Encoder().encode(fields)))
    assert rst_codes(server.data_to_send()) == [(1, 0x1)]
    assert rec.calls == []  # the handler never saw it
    server.receive(frame(1, 0x5, 3, Encoder().encode(REQUEST_FIELDS)))
    assert rec.kinds() == ["headers"]


def test_frames_for_a_stream_this_side_reset_are_dropped_and_the_window_given_back() -> None:
    server, rec = started_server()
    server.receive(frame(1, 0x4, 1, Encoder().encode(REQUEST_FIELDS)))
    server.reset_stream(1, 0x8)
    server.data_to_send()
    for _ in range(20):  # beyond the connection's whole window, which stays open
        server.receive(frame(0, 0, 1, b"x" * 16000))
    assert rec.kinds() == ["headers"]
    assert b"\x08\x00" in server.data_to_send()  # a WINDOW_UPDATE went out


def test_frames_after_the_peers_reset_are_a_stream_closed_error() -> None:
    server, rec = started_server()
    server.receive(frame(1, 0x4, 1, Encoder().encode(REQUEST_FIELDS)))
    server.receive(frame(3, 0, 1, struct.pack(">L", 0x8)))
    assert rec.calls[-1] == ("reset", 1, 0x8)
    server.receive(frame(0, 0, 1, b"late"))
    assert rst_codes(server.data_to_send()) == [(1, 0x5)]


def test_a_body_that_contradicts_its_content_length_is_a_stream_error() -> None:
    server, rec = started_server()
    fields = [*REQUEST_FIELDS[:3], (b":path", b"/"), (b"content-length", b"3")]
    server.receive(frame(1, 0x4, 1, Encoder().encode(fields)))
    server.receive(frame(0, 0x1, 1, b"four"))
    assert rst_codes(server.data_to_send()) == [(1, 0x1)]
    assert rec.calls[-1] == ("reset", 1, 0x1)


def test_a_goaway_is_passed_on_with_the_last_stream_processed() -> None:
    client, rec, server = client_pair()
    for _ in range(2):
        client.send_headers(client.new_stream(), REQUEST_FIELDS, True)
    server.receive_data(client.data_to_send())
    server.close_connection(last_stream_id=1)
    client.receive(server.data_to_send())
    assert rec.calls[-1] == ("goaway", 1, 0)
    assert client.goaway_received


# --- HPACK ------------------------------------------------------------------------------


def test_a_remembered_block_is_decoded_again_once_the_dynamic_table_moved() -> None:
    decoder = BlockDecoder(65536)
    base = StaticEncoder().encode(REQUEST_FIELDS)  # adds nothing to the table

    def with_indexed(name: bytes, value: bytes) -> bytes:
        # A literal with incremental indexing, new name: it becomes dynamic entry 62.
        return b"\x40" + bytes([len(name)]) + name + bytes([len(value)]) + value

    first = base + with_indexed(b"x-a", b"1")
    assert decoder.decode(first, REQUEST)[0][-1] == (b"x-a", b"1")
    again = base + b"\xbe"  # indexed field 62
    assert decoder.decode(again, REQUEST)[0][-1] == (b"x-a", b"1")
    assert decoder.decode(again, REQUEST)[0][-1] == (b"x-a", b"1")  # from memory
    decoder.decode(base + with_indexed(b"x-a", b"2"), REQUEST)  # entry 62 is now x-a: 2
    assert decoder.decode(again, REQUEST)[0][-1] == (b"x-a", b"2")


def test_a_remembered_block_is_checked_for_what_it_is_used_as() -> None:
    decoder = BlockDecoder(65536)
    block = Encoder().encode([(b"grpc-status", b"0")])
    assert decoder.decode(block, TRAILERS)[0] == [(b"grpc-status", b"0")]
    with pytest.raises(HeaderError):
        decoder.decode(block, RESPONSE)  # a response needs :status


def test_a_header_list_above_the_limit_is_a_connection_error() -> None:
    decoder = BlockDecoder(1024)
    with pytest.raises(HeaderError) as err:
        decoder.decode(Encoder().encode([*REQUEST_FIELDS, (b"x", b"v" * 2000)]), REQUEST)
    assert err.value.fatal and err.value.code == 0xB


def test_check_fields_returns_the_content_length() -> None:
    fields = [*REQUEST_FIELDS, (b"content-length", b"12")]
    assert check_fields(fields, REQUEST) == 12
    with pytest.raises(HeaderError):
        check_fields([*REQUEST_FIELDS, (b"content-length", b"x")], REQUEST)


def test_settings_payloads_round_trip() -> None:
    values = {0x3: 100, 0x4: 1 << 20}
    assert decode_settings(settings_payload(values)) == values
    with pytest.raises(ValueError):
        decode_settings(b"\x00\x03\x00")


def test_an_hpack_bomb_is_refused_within_the_header_list_limit() -> None:
    # One 4000-byte value added to the dynamic table, then referred to 100 times: 23 bytes
    # on the wire the second time, 400 KB decoded.
    decoder = BlockDecoder(65536)
    value = b"v" * 4000
    literal = b"\x40\x01x" + encode_integer(len(value), 7) + value  # incremental indexing
    first = StaticEncoder().encode(REQUEST_FIELDS) + literal
    assert decoder.decode(first, REQUEST)[0][-1] == (b"x", value)
    bomb = StaticEncoder().encode(REQUEST_FIELDS) + b"\xbe" * 100
    with pytest.raises(HeaderError) as err:
        decoder.decode(bomb, REQUEST)
    assert err.value.fatal and err.value.code == 0xB  # ENHANCE_YOUR_CALM
