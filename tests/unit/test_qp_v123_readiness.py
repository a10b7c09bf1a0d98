"""Multi-container readiness (Knative 1.13+ ``SERVING_READINESS_PROBE`` arrays)."""

from __future__ import annotations

import asyncio

import pytest

from queueproxy.readiness import GrpcAction, HttpGetAction, ProbeSpec, ReadinessProber, parse_probes
from tests.ports import closed_port
from tests.unit.knative_envs import DEFAULT_PROBE, SIDECAR_PROBE
from tests.unit.test_readiness import HttpUpstream, Logs, TcpUpstream, http_spec, tcp_spec

pytestmark = pytest.mark.timeout(10)


def fast(specs: ProbeSpec | list[ProbeSpec], logs: Logs | None = None) -> ReadinessProber:
    """A prober with aggressive timings shrunk so failures take ~0.3 s."""
    return ReadinessProber(
        specs,
        log=logs if logs is not None else Logs(),
        interval=0.01,
        attempt_timeout=0.1,
        poll_timeout=0.3,
    )


def test_parse_probes_reads_the_controllers_array() -> None:
    user, sidecar = parse_probes(f"[{DEFAULT_PROBE},{SIDECAR_PROBE}]")
    assert user.tcp_socket is not None and user.aggressive
    assert sidecar.http_get == HttpGetAction("127.0.0.1", 8090, "/ready", "HTTP")
    assert not sidecar.aggressive and sidecar.timeout_seconds == 1


def test_parse_probes_reads_a_grpc_action() -> None:
    (spec,) = parse_probes('{"grpc":{"port":50051,"service":"svc"},"periodSeconds":2}')
    assert spec.grpc == GrpcAction(port=50051, service="svc")


def test_no_probes_mean_always_ready() -> None:
    assert asyncio.run(ReadinessProber(()).check())


async def test_every_probe_must_pass() -> None:
    async with TcpUpstream() as user, HttpUpstream() as sidecar:
        prober = fast([tcp_spec(user.port), http_spec(sidecar.port)])
        assert await prober.check()
        assert user.accepted >= 1 and len(sidecar.requests) == 1


async def test_one_failing_sidecar_fails_the_check_and_says_why() -> None:
    logs = Logs()
    async with TcpUpstream() as user:
        prober = fast([tcp_spec(user.port), tcp_spec(closed_port())], logs)
        assert not await prober.check()
    assert len(logs) == 1 and logs[0].startswith("aggressive probe error (failed ")


async def test_probes_run_side_by_side_not_one_after_the_other() -> None:
    # Two normal-mode HTTP probes that each hold their answer for 0.3 s: run in turn
    # they would take 0.6 s; the check must take about one delay.
    async with HttpUpstream(delay=0.3) as a, HttpUpstream(delay=0.3) as b:
        prober = ReadinessProber(
            [http_spec(a.port, period=1, timeout=2), http_spec(b.port, period=1, timeout=2)]
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await prober.check()
        assert loop.time() - started < 0.55


async def test_each_probe_keeps_its_own_success_counter() -> None:
    async with TcpUpstream() as user, TcpUpstream() as sidecar:
        prober = fast([tcp_spec(user.port, threshold=2), tcp_spec(sidecar.port, threshold=3)])
        assert await prober.check()
        assert "successes=2,3" in repr(prober)
        assert prober.success_count == 2


async def test_http_probe_path_without_leading_slash_is_accepted() -> None:
    async with HttpUpstream() as up:
        spec = ProbeSpec(http_get=HttpGetAction("127.0.0.1", up.port, "ready", "HTTP"))
        assert await fast(spec).check()
        assert up.requests[0].startswith(b"GET /ready HTTP/1.1\r\n")


async def test_grpc_probe_never_passes_silently() -> None:
    logs = Logs()
    spec = ProbeSpec(grpc=GrpcAction(port=closed_port()), period_seconds=1, timeout_seconds=1)
    assert not await ReadinessProber(spec, log=logs).check()
