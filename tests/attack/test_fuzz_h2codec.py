"""A differential fuzzer of the HTTP/2 codec (``proxy.h2codec``) against the ``h2`` library.

Server side: each example is a client's connection, the preface and then frames drawn from
every type with flags, stream ids and payloads both well-formed (HPACK blocks of real
requests, SETTINGS, window increments) and not, split into packets at drawn points. Client
side: what an upstream answers to two requests, drawn the same way. The same bytes go to the
engine's codec and to an h2 connection. The properties:

* the codec raises nothing but ``H2Error``, and after one it has queued a GOAWAY;
* every request (response) head it hands to its handler is well-formed (``check_fields``);
* where the packets are cut changes nothing it hands over;
* up to h2's first connection error, every head the codec hands over is one h2 also reads,
  on the same stream, with the same fields: the codec may refuse more than h2, never accept
  what h2 does not see.

The default suite draws a bounded number of examples, derandomised so CI is repeatable;
``SLUICE_FUZZ_EXAMPLES=20000`` draws that many, randomly, on demand (20,000 of each side
passed when it was written).
"""

from __future__ import annotations

import os
import struct

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hpack.hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.h2codec import H2Codec
from proxy.h2frames import PREFACE, H2Error, settings_payload
from proxy.h2hpack import REQUEST, RESPONSE, check_fields
from tests.unit.test_h2codec import REQUEST_FIELDS, Recorder, frame, goaway_code

_ON_DEMAND = os.environ.get("SLUICE_FUZZ_EXAMPLES")
EXAMPLES = int(_ON_DEMAND or "200")
#: Bounded and repeatable in the default suite, random on demand.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=_ON_DEMAND is None,
    suppress_health_check=[HealthCheck.too_slow],
)

_REQUESTS = [
    REQUEST_FIELDS,
    [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"a"),
        (b":path", b"/up"),
        (b"content-length", b"4"),
    ],
    [*REQUEST_FIELDS, (b"te", b"trailers"), (b"x-a", b"1")],
    [*REQUEST_FIELDS, (b"Upper", b"no")],
    [(b":method", b"GET"), (b":path", b"/")],  # no :scheme
    [(b"grpc-status", b"0")],  # a trailer block
]

payloads = st.one_of(
    st.sampled_from(_REQUESTS).map(lambda fields: Encoder().encode(fields)),
    st.builds(
        lambda key, value: settings_payload({key: value}),
        st.integers(0, 8),
        st.integers(0, 2**32 - 1),
    ),
    st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">L", n)),
    st.binary(max_size=40),
    st.just(b""),
)
garbage = st.builds(
    frame,
    st.integers(0, 10),  # every type, and one unknown
    st.sampled_from([0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x25, 0xFF]),
    st.sampled_from([0, 1, 2, 3, 5, 7]),
    payloads,
)
odd = st.sampled_from([1, 1, 3, 5])
blocks = st.sampled_from(_REQUESTS).map(lambda fields: Encoder().encode(fields))


def peer_frames(
    sids: st.SearchStrategy[int],
    blocks: st.SearchStrategy[bytes],
    head_flags: list[int],
    extra: bytes,
) -> st.SearchStrategy[bytes]:
    """Mostly frames a real peer sends on ``sids`` (HEADERS and CONTINUATION of ``blocks``,
    DATA, WINDOW_UPDATE, RST_STREAM, ``extra``), so that heads get through and the streams'
    states are exercised; the garbage among them finds the errors."""
    return st.one_of(
        st.builds(frame, st.just(1), st.sampled_from(head_flags), sids, blocks),
        st.builds(frame, st.just(9), st.sampled_from([0x4, 0x0]), sids, blocks),
        st.builds(frame, st.just(0), st.sampled_from([0, 0x1]), sids, st.binary(max_size=8)),
        st.builds(frame, st.just(8), st.just(0), st.sampled_from([0, 1, 3]), st.just(b"\0\0\1\0")),
        st.builds(
            frame, st.just(3), st.just(0), sids, st.sampled_from([b"\0\0\0\x08", b"\0\0\0\x07"])
        ),
        st.just(extra),
        garbage,
    )


frames = peer_frames(odd, blocks, [0x4, 0x5, 0x24, 0x0], frame(6, 0, 0, b"12345678"))
#: A client's connection: its preface and SETTINGS, a first request, then the drawn frames.
connections = st.lists(frames, min_size=1, max_size=10).map(
    lambda fs: (
        PREFACE
        + frame(4, 0, 0, b"")
        + frame(1, 0x4, 1, Encoder().encode(_REQUESTS[1]))
        + b"".join(fs)
    )
)


Heads = list[tuple[int, int, list[tuple[bytes, bytes]]]]  # (piece, stream, fields)


def codec_heads(codec: H2Codec, rec: Recorder, pieces: list[bytes]) -> Heads:
    """The heads (``on_headers``) the codec hands over when fed ``pieces`` one by one, each
    with the index of the piece that completed it; stops at its connection error."""
    heads: Heads = []
    for i, piece in enumerate(pieces):
        before = len(rec.calls)
        try:
            codec.receive(piece)
        except H2Error:
            assert goaway_code(codec.data_to_send()) is not None
            pieces = []
        heads += [(i, c[1], c[2]) for c in rec.calls[before:] if c[0] == "headers"]
        codec.data_to_send()
        if not pieces:
            break
    return heads


def h2_heads(conn: h2.connection.H2Connection, pieces: list[bytes]) -> tuple[Heads, int]:
    """The heads h2 reads when fed ``pieces`` one by one (events of a call that fails are
    lost, so one frame at a time), and the index of the piece of its first error."""
    heads: Heads = []
    for i, piece in enumerate(pieces):
        try:
            events = conn.receive_data(piece)
        except h2.exceptions.ProtocolError:
            return heads, i
        for e in events:
            if isinstance(e, h2.events.RequestReceived | h2.events.ResponseReceived):
                heads.append((i, e.stream_id or 0, [(n, v) for n, v in e.headers or []]))
    return heads, len(pieces)


def h2_peer(client_side: bool) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=client_side, header_encoding=None, normalize_inbound_headers=False
        )
    )
    conn.initiate_connection()
    return conn


def same_until_h2_stops(ours: Heads, theirs: Heads, h2_error: int) -> None:
    """Every head the codec read before h2's first connection error, h2 read too, the same.
    (h2 makes some stream errors connection errors; past one it reads nothing to compare.)"""
    seen = {sid: fields for _, sid, fields in theirs}
    for i, sid, fields in ours:
        if i < h2_error:
            assert sid in seen, f"stream {sid}: a head h2 did not read"
            assert seen[sid] == fields, f"stream {sid}: {fields} != h2's {seen[sid]}"


def _frames_of(data: bytes) -> list[bytes]:
    """``data`` (a preface, then frames) cut at its frame boundaries."""
    pieces = [data[: len(PREFACE)]]
    pos = len(PREFACE)
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        pieces.append(data[pos : pos + 9 + length])
        pos += 9 + length
    return pieces


@FUZZ
@given(data=connections, cuts=st.lists(st.integers(1, 400), max_size=4))
def test_the_codec_never_reads_a_request_h2_does_not(data: bytes, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if c < len(data)})
    packets = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    rec = Recorder()
    by_packet = codec_heads(H2Codec(rec, client_side=False), rec, packets)
    for _, _, fields in by_packet:
        check_fields(fields, REQUEST)  # raises if the codec let a malformed request through
    frames = _frames_of(data)
    rec = Recorder()
    ours = codec_heads(H2Codec(rec, client_side=False), rec, frames)
    # Where the packets are cut changes nothing.
    assert [h[1:] for h in ours] == [h[1:] for h in by_packet]
    same_until_h2_stops(ours, *h2_heads(h2_peer(client_side=False), frames))


# --- the client side: what an upstream answers ------------------------------------------

_RESPONSES = [
    [(b":status", b"200"), (b"content-type", b"application/grpc")],
    [(b":status", b"103"), (b"link", b"</a>")],
    [(b"grpc-status", b"0"), (b"grpc-message", b"ok")],  # trailers
    [(b":status", b"200"), (b"Upper", b"no")],
    [(b"content-type", b"text/plain")],  # no :status
    [(b":status", b"204"), (b"connection", b"close")],
]
response_blocks = st.sampled_from(_RESPONSES).map(lambda fields: Encoder().encode(fields))
ours_sids = st.sampled_from([1, 1, 3, 2, 5])
server_frames = peer_frames(
    ours_sids, response_blocks, [0x4, 0x5, 0x0], frame(7, 0, 0, b"\0\0\0\1\0\0\0\0")
)
#: What a server sends: its SETTINGS, stream 1's answer (half the time), the drawn frames.
answers = st.builds(
    lambda first, fs: frame(4, 0, 0, b"") + first + b"".join(fs),
    st.sampled_from([b"", frame(1, 0x4, 1, Encoder().encode(_RESPONSES[0]))]),
    st.lists(server_frames, min_size=1, max_size=10),
)


@FUZZ
@given(data=answers)
def test_the_client_codec_never_reads_a_response_h2_does_not(data: bytes) -> None:
    rec = Recorder()
    codec = H2Codec(rec, client_side=True)
    theirs = h2_peer(client_side=True)
    for sid in (1, 3):
        codec.send_headers(codec.new_stream(), REQUEST_FIELDS, True)
        theirs.send_headers(sid, REQUEST_FIELDS, end_stream=True)
    codec.data_to_send()  # the preface and the requests
    frames = _frames_of(PREFACE + data)[1:]
    ours = codec_heads(codec, rec, frames)
    for _, _, fields in ours:
        check_fields(fields, RESPONSE)
    same_until_h2_stops(ours, *h2_heads(theirs, frames))
