"""HPACK's integer representation (RFC 7541 section 5.1), the one piece of HPACK both the
engine's static-table encoder (``proxy.h2hpack``) and the queue-proxy's hand-framed gRPC
health probe (``queueproxy.grpc_health``, which must not load ``hpack``) need."""

from __future__ import annotations

__all__ = ["encode_integer"]


def encode_integer(value: int, prefix: int, flags: int = 0) -> bytes:
    """``value`` with a ``prefix``-bit prefix, the other bits of the first byte ``flags``."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
