"""``grpc.health.v1.Health/Check`` over h2c, with no HTTP/2 or gRPC library.

Knative 1.19+ checks a container whose readiness probe is ``grpc: {port, service}`` with one
unary health RPC in cleartext HTTP/2 (``pkg/queue/health/probe.go`` ``GRPCProbe``), as the
kubelet does. The sidecar's import diet has no room for grpcio, and the exchange is
small enough to speak directly:

* write the connection preface, an empty ``SETTINGS``, one ``HEADERS`` frame (HPACK
  literals without Huffman coding or indexing, so no encoder state) and one ``DATA``
  frame carrying the length-prefixed ``HealthCheckRequest{service}``;
* read frames until stream 1 ends: acknowledge ``SETTINGS`` and ``PING``, collect
  stream 1's ``DATA``; a ``RST_STREAM`` or ``GOAWAY`` fails the probe. Header blocks
  are not decoded (nothing in them is needed, so no HPACK decoder state either);
* pass only if the response message says ``SERVING``. A server without the health
  service, or that does not know the service, answers with trailers only (no message),
  which fails the probe, as the ``Unimplemented``/``NotFound`` status does in Go.

The whole exchange, connecting included, is bounded by ``timeout``. Every failure is a
``ProbeError`` with one line.
"""

from __future__ import annotations

import asyncio
import struct

from proxy.dataplane.prober import ProbeError
from proxy.hpack_int import encode_integer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
METHOD_PATH = b"/grpc.health.v1.Health/Check"
#: HealthCheckResponse.ServingStatus values.
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS, _PADDED = 0x1, 0x1, 0x4, 0x8
#: A health response is a few bytes; anything near this is not one.
MAX_RESPONSE_BYTES = 64 * 1024


def _literal(name_index: int, value: bytes) -> bytes:
    """A literal header field without indexing, its name from the static table."""
    return encode_integer(name_index, 4) + encode_integer(len(value), 7) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def request_bytes(authority: str, service: str, user_agent: str) -> bytes:
    """Everything the client writes, preface to the request's last byte."""
    block = b"".join(
        (
            b"\x83",  # :method POST (static table 3)
            b"\x86",  # :scheme http (static table 6)
            _literal(4, METHOD_PATH),  # :path
            _literal(1, authority.encode()),  # :authority
            _literal(31, b"application/grpc"),  # content-type
            b"\x00" + encode_integer(2, 7) + b"te" + encode_integer(8, 7) + b"trailers",
            _literal(58, user_agent.encode()),  # user-agent
        )
    )
    name = service.encode()
    message = (b"\x0a" + _varint(len(name)) + name) if name else b""
    body = b"\x00" + struct.pack(">I", len(message)) + message
    return (
        PREFACE
        + _frame(_SETTINGS, 0, 0)
        + _frame(_HEADERS, _END_HEADERS, 1, block)
        + _frame(_DATA, _END_STREAM, 1, body)
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def serving_status(data: bytes) -> int | None:
    """The ``status`` of the first gRPC message in ``data``; ``None`` if there is none."""
    if len(data) < 5:
        return None
    if data[0] != 0:
        raise ProbeError("health rpc probe failed: compressed response message")
    (length,) = struct.unpack(">I", data[1:5])
    message = data[5 : 5 + length]
    if len(message) != length:
        raise ProbeError("health rpc probe failed: truncated response message")
    status, pos = 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(message, pos)
            if field == 1:
                status = value
        elif wire == 2:
            size, pos = _read_varint(message, pos)
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ProbeError("health rpc probe failed: malformed response message")
    return status


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ProbeError("health rpc probe failed: malformed response message")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


async def probe_grpc_health(
    host: str, port: int, service: str, timeout: float, user_agent: str = "kube-probe//"
) -> None:
    """One health check of ``service`` on ``host:port``; raises ``ProbeError`` unless SERVING."""
    target = f"{host}:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                raise ProbeError(
                    f'failed to connect service at "{target}": {exc.strerror or exc}'
                ) from None
            writer.write(request_bytes(target, service, user_agent))
            data = await _read_response(reader, writer)
    except TimeoutError:
        raise ProbeError(f"health rpc did not complete within {timeout:g}s") from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise ProbeError(f"health rpc probe failed: connection lost ({exc})") from None
    finally:
        if writer is not None:
            writer.close()
    status = serving_status(data)
    if status is None:
        raise ProbeError(
            "health rpc probe failed: no response message (no grpc.health.v1.Health "
            f"service, or service {service!r} unknown)"
        )
    if status != 1:
        name = STATUS_NAMES.get(status, str(status))
        raise ProbeError(f'service unhealthy (responded with "{name}")')


async def _read_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    data = bytearray()
    while True:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if length > MAX_RESPONSE_BYTES:
            raise ProbeError(f"health rpc probe failed: {length}-byte frame")
        payload = await reader.readexactly(length)
        if kind == _SETTINGS and not flags & _ACK:
            writer.write(_frame(_SETTINGS, _ACK, 0))
        elif kind == _PING and not flags & _ACK:
            writer.write(_frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            raise ProbeError("health rpc probe failed: the server sent GOAWAY")
        elif stream == 1 and kind == _RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            raise ProbeError(f"health rpc probe failed: stream reset (error code {code})")
        elif stream == 1 and kind in (_DATA, _HEADERS):
            if kind == _DATA:
                if flags & _PADDED and payload:
                    payload = payload[1 : len(payload) - payload[0]]
                data += payload
                if len(data) > MAX_RESPONSE_BYTES:
                    raise ProbeError("health rpc probe failed: response too large")
            if flags & _END_STREAM:
                return bytes(data)
