"""Wire compatibility of the ``metrics.Stat`` / ``WireStatMessages`` protobuf messages."""

from __future__ import annotations

import struct

import pytest

from proxy.dataplane.autoscaler_stat_pb import (
    Stat,
    decode_stat,
    decode_wire_stats,
    encode_stat,
    encode_wire_stats,
)

FULL = Stat(
    pod_name="hello-00001-deployment-abc",
    average_concurrent_requests=1.5,
    average_proxied_concurrent_requests=0.25,
    request_count=39.0,
    proxied_request_count=15.0,
    process_uptime=123.456,
    timestamp=1_700_000_000,
)


def double(tag: int, value: float) -> bytes:
    return bytes([tag]) + struct.pack("<d", value)


def test_stat_round_trips() -> None:
    assert decode_stat(encode_stat(FULL)) == FULL


def test_default_stat_encodes_to_nothing() -> None:
    assert encode_stat(Stat()) == b""
    assert decode_stat(b"") == Stat()


def test_stat_holding_only_pod_name_encodes_only_field_one() -> None:
    # What a scrape returns before the first report.
    assert encode_stat(Stat(pod_name="p")) == b"\x0a\x01p"


def test_stat_matches_hand_computed_encoding() -> None:
    stat = Stat(
        pod_name="pod",
        average_concurrent_requests=1.0,
        average_proxied_concurrent_requests=0.5,
        request_count=2.0,
        proxied_request_count=3.0,
        process_uptime=4.0,
        timestamp=300,
    )
    expected = (
        b"\x0a\x03pod"  # field 1, wire type 2 (length-delimited)
        + double(0x11, 1.0)  # field 2, wire type 1 (fixed64)
        + double(0x19, 0.5)  # field 3
        + double(0x21, 2.0)  # field 4
        + double(0x29, 3.0)  # field 5
        + double(0x31, 4.0)  # field 6
        + b"\x38\xac\x02"  # field 7, wire type 0 (varint 300)
    )
    assert encode_stat(stat) == expected
    assert decode_stat(expected) == stat


def test_zero_fields_are_omitted_on_the_wire() -> None:
    assert encode_stat(Stat(request_count=2.0)) == double(0x21, 2.0)


def test_decode_accepts_fields_in_any_order_and_skips_unknown_ones() -> None:
    data = b"\x38\x05" + double(0x11, 2.5) + b"\x40\x07" + b"\x0a\x01x"  # field 8 is unknown
    assert decode_stat(data) == Stat(pod_name="x", average_concurrent_requests=2.5, timestamp=5)


def test_decode_rejects_malformed_input() -> None:
    with pytest.raises(ValueError):
        decode_stat(b"\x0a\x05ab")  # length runs past the end


def test_wire_stats_round_trip() -> None:
    items = [("default", "hello-00001", FULL), ("ns2", "r2", Stat(request_count=1.0))]
    assert decode_wire_stats(encode_wire_stats(items)) == items


def test_empty_wire_stats_encode_to_nothing() -> None:
    assert encode_wire_stats([]) == b""
    assert decode_wire_stats(b"") == []


def test_wire_stats_match_hand_computed_encoding() -> None:
    inner = b"\x0a\x01p" + double(0x21, 1.0)
    message = b"\x0a\x02ns" + b"\x12\x01r" + b"\x1a" + bytes([len(inner)]) + inner
    expected = b"\x0a" + bytes([len(message)]) + message
    assert encode_wire_stats([("ns", "r", Stat(pod_name="p", request_count=1.0))]) == expected


def test_wire_stats_keep_an_all_default_stat_present() -> None:
    encoded = encode_wire_stats([("ns", "r", Stat())])
    assert encoded == b"\x0a\x09" + b"\x0a\x02ns" + b"\x12\x01r" + b"\x1a\x00"
    assert decode_wire_stats(encoded) == [("ns", "r", Stat())]


def test_decode_wire_stats_rejects_malformed_input() -> None:
    with pytest.raises(ValueError):
        decode_wire_stats(b"\x0a\x09\x0a")


# The queue-proxy's library-free encoder must match the protobuf library byte for byte.
_SAMPLES = [
    Stat(),
    Stat(pod_name="p"),
    Stat(pod_name="hello-00001-deployment-7d9c-xk2p", average_concurrent_requests=1.5),
    Stat(
        pod_name="pod-ü",
        average_concurrent_requests=0.25,
        average_proxied_concurrent_requests=3.0,
        request_count=39.0,
        proxied_request_count=1e-9,
        process_uptime=123456.789,
        timestamp=1_700_000_000,
    ),
    Stat(request_count=-0.0, timestamp=-5),
    Stat(pod_name="x" * 300, process_uptime=1e300),
]


@pytest.mark.parametrize("stat", _SAMPLES)
def test_hand_encoder_matches_protobuf_library(stat: Stat) -> None:
    from proxy.dataplane.autoscaler_stat import encode_stat as hand_encode
    from proxy.dataplane.autoscaler_stat_pb import encode_stat_pb

    assert hand_encode(stat) == encode_stat_pb(stat)
    assert decode_stat(hand_encode(stat)) == stat
