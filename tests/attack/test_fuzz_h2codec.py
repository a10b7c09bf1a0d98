"""A differential fuzzer of the HTTP/2 codec (``proxy.h2codec``) against the ``h2`` library.

Each example is a client's connection: the preface, then frames drawn from every type with
flags, stream ids and payloads both well-formed (HPACK blocks of real requests, SETTINGS,
window increments) and not, split into packets at drawn points. The same bytes go to the
engine's server codec and to an h2 server connection. The properties:

* the codec raises nothing but ``H2Error``, and after one it has queued a GOAWAY;
* every request the codec hands to its handler is well-formed (``check_fields``);
* up to the first connection error on either side, every request the codec hands over is
  one h2 also reads, on the same stream, with the same header fields: the codec may refuse
  more than h2, never accept what h2 does not see.

The default suite draws a bounded number of examples, derandomised so CI is repeatable;
``SLUICE_FUZZ_EXAMPLES=20000`` draws that many, randomly, on demand.
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

from proxy.h2codec import PREFACE, H2Codec, H2Error, settings_payload
from proxy.h2hpack import REQUEST, check_fields
from tests.unit.test_h2codec import REQUEST_FIELDS, Recorder, frame, goaway_code

_ON_DEMAND = os.environ.get("SLUICE_FUZZ_EXAMPLES")
EXAMPLES = int(_ON_DEMAND or "200")

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
# Mostly frames a real client sends, so that requests get through and the streams' states
# are exercised; the garbage among them finds the errors.
frames = st.one_of(
    st.builds(frame, st.just(1), st.sampled_from([0x4, 0x5, 0x24, 0x0]), odd, blocks),
    st.builds(frame, st.just(9), st.sampled_from([0x4, 0x0]), odd, blocks),
    st.builds(frame, st.just(0), st.sampled_from([0, 0x1]), odd, st.binary(max_size=8)),
    st.builds(frame, st.just(8), st.just(0), st.sampled_from([0, 1, 3]), st.just(b"\0\0\1\0")),
    st.builds(frame, st.just(3), st.just(0), odd, st.just(b"\0\0\0\x08")),
    st.builds(frame, st.just(6), st.just(0), st.just(0), st.just(b"12345678")),
    garbage,
)
#: A client's connection: its preface and SETTINGS, a first request, then the drawn frames.
connections = st.lists(frames, min_size=1, max_size=10).map(
    lambda fs: (
        PREFACE
        + frame(4, 0, 0, b"")
        + frame(1, 0x4, 1, Encoder().encode(_REQUESTS[1]))
        + b"".join(fs)
    )
)


def codec_requests(
    packets: list[bytes],
) -> tuple[list[tuple[int, list[tuple[bytes, bytes]]]], bool]:
    """The requests the codec hands over, and whether it ended the connection."""
    rec = Recorder()
    codec = H2Codec(rec, client_side=False)
    for packet in packets:
        try:
            codec.receive(packet)
        except H2Error:
            assert goaway_code(codec.data_to_send()) is not None
            break
        codec.data_to_send()
    requests = [(c[1], c[2]) for c in rec.calls if c[0] == "headers"]
    return requests, codec.closed


def h2_requests(data: bytes) -> dict[int, list[tuple[bytes, bytes]]]:
    """The requests h2 reads before its first connection error."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False, header_encoding=None, normalize_inbound_headers=False
        )
    )
    conn.initiate_connection()
    seen: dict[int, list[tuple[bytes, bytes]]] = {}
    try:
        for piece in _frames_of(data):  # one at a time: an error loses the call's events
            for event in conn.receive_data(piece):
                if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                    seen[event.stream_id] = [(n, v) for n, v in event.headers or []]
    except h2.exceptions.ProtocolError:
        pass
    return seen


def _frames_of(data: bytes) -> list[bytes]:
    """``data`` (a preface, then frames) cut at its frame boundaries."""
    pieces = [data[: len(PREFACE)]]
    pos = len(PREFACE)
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        pieces.append(data[pos : pos + 9 + length])
        pos += 9 + length
    return pieces


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=_ON_DEMAND is None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=connections, cuts=st.lists(st.integers(1, 400), max_size=4))
def test_the_codec_never_reads_a_request_h2_does_not(data: bytes, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if c < len(data)})
    packets = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    ours, _ = codec_requests(packets)
    for _, fields in ours:
        check_fields(fields, REQUEST)  # raises if the codec let a malformed request through
    theirs = h2_requests(data)
    # h2 stops at its first connection error, which may come earlier than the codec's (it
    # treats some stream errors as connection errors): compare the requests up to there.
    for sid, fields in ours:
        if sid in theirs:
            assert theirs[sid] == fields, f"stream {sid}: {fields} != h2's {theirs[sid]}"
        else:
            assert sid > max(theirs, default=0), f"stream {sid}: a request h2 did not read"
