"""gRPC readiness probes: the built-in h2c ``grpc.health.v1.Health/Check`` client.

The peer is grpcio's own health servicer on loopback (skipped where grpcio is not
installed); the wire helpers are checked without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from proxy.dataplane.prober import ProbeError
from queueproxy.grpc_health import (
    probe_grpc_health,
    request_fields,
    request_message,
    serving_status,
)
from queueproxy.readiness import GrpcAction, ProbeSpec, ReadinessProber
from tests.ports import closed_port

pytestmark = pytest.mark.timeout(20)


def test_the_request_is_grpc_gos_health_call() -> None:
    fields = dict(request_fields("127.0.0.1:50051", "kube-probe//"))
    assert fields[b":method"] == b"POST" and fields[b":path"] == b"/grpc.health.v1.Health/Check"
    assert fields[b"content-type"] == b"application/grpc" and fields[b"te"] == b"trailers"
    assert fields[b":authority"] == b"127.0.0.1:50051"
    # A 5-byte prefix (uncompressed, length 5), then field 1 = "svc"; nothing for "".
    assert request_message("svc") == b"\x00\x00\x00\x00\x05\x0a\x03svc"
    assert request_message("") == b"\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", None),
        (b"\x00\x00\x00\x00\x02\x08\x01", 1),
        (b"\x00\x00\x00\x00\x02\x08\x02", 2),
        (b"\x00\x00\x00\x00\x00", 0),  # an empty message: UNKNOWN
        (b"\x00\x00\x00\x00\x05\x12\x01x\x08\x01", 1),  # an unknown field is skipped
    ],
)
def test_serving_status_decodes_the_response_message(data: bytes, status: int | None) -> None:
    assert serving_status(data) == status


@pytest.mark.parametrize(
    "data", [b"\x01\x00\x00\x00\x00", b"\x00\x00\x00\x00\x09\x08", b"\x00\x00\x00\x00\x01\x0f"]
)
def test_serving_status_rejects_what_it_cannot_read(data: bytes) -> None:
    with pytest.raises(ProbeError):
        serving_status(data)


async def test_closed_port_fails_with_one_line() -> None:
    with pytest.raises(ProbeError, match="failed to connect service at"):
        await probe_grpc_health("127.0.0.1", closed_port(), "", 1.0)


async def test_silent_server_times_out() -> None:
    held = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # never answers; returns when the probe hangs up
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            held.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ProbeError, match=r"did not complete within 0\.2s"):
            await probe_grpc_health("127.0.0.1", port, "", 0.2)
        # Both sockets closed before the loop ends: the server side sees the probe's EOF
        # only after the probe's socket closed. A socket still open when its loop closes is
        # a ResourceWarning in a later test (issue 12).
        await asyncio.wait_for(held.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()


# --- against grpcio's health servicer ------------------------------------------------


@pytest.fixture
async def grpc_server() -> AsyncIterator[tuple[int, object]]:
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("ready", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("draining", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        yield port, servicer
    finally:
        await server.stop(None)


async def test_serving_server_passes(grpc_server: tuple[int, object]) -> None:
    port, _ = grpc_server
    await probe_grpc_health("127.0.0.1", port, "", 2.0)
    await probe_grpc_health("127.0.0.1", port, "ready", 2.0)


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("draining", 'service unhealthy \\(responded with "NOT_SERVING"\\)'),
        ("nobody", "no response message"),
    ],
)
async def test_unhealthy_or_unknown_service_fails(
    grpc_server: tuple[int, object], service: str, message: str
) -> None:
    port, _ = grpc_server
    with pytest.raises(ProbeError, match=message):
        await probe_grpc_health("127.0.0.1", port, service, 2.0)


async def test_server_without_health_service_fails() -> None:
    grpc = pytest.importorskip("grpc")
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with pytest.raises(ProbeError, match="no response message"):
            await probe_grpc_health("127.0.0.1", port, "", 2.0)
    finally:
        await server.stop(None)


async def test_readiness_prober_runs_grpc_probes(grpc_server: tuple[int, object]) -> None:
    port, _ = grpc_server
    normal = ProbeSpec(grpc=GrpcAction(port=port), period_seconds=1, timeout_seconds=1)
    aggressive = ProbeSpec(grpc=GrpcAction(port=port, service="ready"), success_threshold=1)
    assert await ReadinessProber([normal, aggressive]).check()
    down = ProbeSpec(grpc=GrpcAction(port=port, service="draining"), period_seconds=1)
    assert not await ReadinessProber(down).check()
