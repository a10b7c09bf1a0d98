"""The autoscaler's ``metrics.Stat`` value, and its encoder for the queue-proxy.

Why a hand-written encoder when ``protobuf`` is a dependency: importing the protobuf runtime
costs the sidecar about 4 MB of its 30 MB idle-RSS budget (measured: 21.3 → 25.3 MB for
``google.protobuf.descriptor_pb2`` on top of asyncio + uvloop + httptools), to encode one flat
message of seven scalar fields. The encoding below is proto3's, field for field; the tests in
``tests/unit/test_autoscaler_stat.py`` check it byte for byte against the protobuf library's, which
``proxy.dataplane.autoscaler_stat_pb`` still uses for decoding and for the activator's
``WireStatMessages``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_DOUBLE = struct.Struct("<d")


@dataclass(frozen=True, slots=True)
class Stat:
    """One pod's (or one activator's per-revision) figures for the autoscaler."""

    pod_name: str = ""
    average_concurrent_requests: float = 0
    average_proxied_concurrent_requests: float = 0
    request_count: float = 0
    proxied_request_count: float = 0
    process_uptime: float = 0
    timestamp: int = 0


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_stat(stat: Stat) -> bytes:
    """Serialize one ``metrics.Stat`` as proto3 does: fields in number order, defaults omitted."""
    out = bytearray()
    if stat.pod_name:
        name = stat.pod_name.encode()
        out += b"\x0a" + _varint(len(name)) + name
    # Fields 2..6 are doubles: tag = (number << 3) | 1 (fixed64).
    for tag, value in (
        (0x11, stat.average_concurrent_requests),
        (0x19, stat.average_proxied_concurrent_requests),
        (0x21, stat.request_count),
        (0x29, stat.proxied_request_count),
        (0x31, stat.process_uptime),
    ):
        # proto3 omits a double only when it is +0.0 (a -0.0 is written).
        if value != 0 or _DOUBLE.pack(value) != b"\x00" * 8:
            out.append(tag)
            out += _DOUBLE.pack(value)
    if stat.timestamp:
        out += b"\x38" + _varint(stat.timestamp)
    return bytes(out)
