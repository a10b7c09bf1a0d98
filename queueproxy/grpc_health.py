"""``grpc.health.v1.Health/Check`` over h2c, with no gRPC library.

Knative 1.19+ checks a container whose readiness probe is ``grpc: {port, service}`` with one
unary health RPC in cleartext HTTP/2 (``pkg/queue/health/probe.go`` ``GRPCProbe``), as the
kubelet does. The sidecar's import diet has no room for grpcio, and the exchange is small
enough to speak directly: one POST of the length-prefixed ``HealthCheckRequest{service}``
through the engine's HTTP/2 codec (``proxy.dataplane.prober.h2c_call``, loaded only when a
gRPC probe runs), passing only if the response message says ``SERVING``. A server without
the health service, or that does not know the service, answers with trailers only (no
message), which fails the probe, as the ``Unimplemented``/``NotFound`` status does in Go.

The whole exchange, connecting included, is bounded by ``timeout``. Every failure is a
``ProbeError`` with one line.
"""

from __future__ import annotations

import asyncio
import struct

from proxy.dataplane.prober import ProbeError, h2c_call

METHOD_PATH = b"/grpc.health.v1.Health/Check"
#: HealthCheckResponse.ServingStatus values.
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
#: A health response is a few bytes; anything near this is not one.
MAX_RESPONSE_BYTES = 64 * 1024


def request_fields(authority: str, user_agent: str) -> list[tuple[bytes, bytes]]:
    """The health call's HEADERS, as grpc-go's client sends them."""
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", METHOD_PATH),
        (b":authority", authority.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"user-agent", user_agent.encode()),
    ]


def request_message(service: str) -> bytes:
    """The length-prefixed ``HealthCheckRequest{service}`` (field 1, omitted when empty)."""
    name = service.encode()
    message = (b"\x0a" + _varint(len(name)) + name) if name else b""
    return b"\x00" + struct.pack(">I", len(message)) + message


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
    from proxy.h2frames import H2Error

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
            answer = await h2c_call(
                reader,
                writer,
                request_fields(target, user_agent),
                request_message(service),
                MAX_RESPONSE_BYTES,
            )
    except TimeoutError:
        raise ProbeError(f"health rpc did not complete within {timeout:g}s") from None
    except (OSError, EOFError) as exc:
        raise ProbeError(f"health rpc probe failed: connection lost ({exc})") from None
    except H2Error as exc:
        raise ProbeError(f"health rpc probe failed: HTTP/2: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
    if answer.goaway:
        raise ProbeError("health rpc probe failed: the server sent GOAWAY")
    if answer.reset is not None:
        raise ProbeError(f"health rpc probe failed: stream reset (error code {answer.reset})")
    if answer.overflow:
        raise ProbeError("health rpc probe failed: response too large")
    status = serving_status(bytes(answer.body))
    if status is None:
        raise ProbeError(
            "health rpc probe failed: no response message (no grpc.health.v1.Health "
            f"service, or service {service!r} unknown)"
        )
    if status != 1:
        name = STATUS_NAMES.get(status, str(status))
        raise ProbeError(f'service unhealthy (responded with "{name}")')
