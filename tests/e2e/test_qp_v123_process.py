"""``python -m queueproxy`` as a real process under the environment Knative v1.23.0 sets.

Each queue-proxy gets ``tests.unit.knative_envs.v123_env`` (the controller's env list for a
typical revision, read from ``queue.go``) with only the ports changed to free loopback ones
and the ``SLUICE_*`` overrides added; the apps are ``tests/e2e/apps/echo_app.py`` (echoes
request headers on ``/headers``) and ``duplex_app.py``. Every process is killed by PID in a
``finally``.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.test_queueproxy_process import (
    QueueProxyProcess,
    kill,
    kubelet_probe,
    start_queue_proxy,
)
from tests.ports import closed_port, free_port
from tests.unit.knative_envs import SIDECAR_PROBE, observability_json, v123_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "e2e" / "apps"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ACTIVATOR_PROBE = {"User-Agent": "Knative-Activator-Probe", "K-Network-Probe": "queue"}


def start_app(name: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, str(APPS / name), "0"], stdout=subprocess.PIPE, cwd=ROOT, env={}
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, f"{name} did not start"
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("PORT="), line
        return proc, int(line[5:])
    except BaseException:
        kill(proc)
        raise


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    proc, port = start_app("echo_app.py")
    try:
        yield port
    finally:
        kill(proc)


def env_for(user_port: int, **overrides: str) -> dict[str, str]:
    """The v1.23.0 controller's env for a revision on ``user_port``, on free ports."""
    probe = {"tcpSocket": {"port": user_port, "host": "127.0.0.1"}, "successThreshold": 1}
    env = v123_env(
        QUEUE_SERVING_PORT=str(free_port()),
        QUEUE_SERVING_TLS_PORT=str(free_port()),
        USER_PORT=str(user_port),
        SERVING_READINESS_PROBE=json.dumps(probe, separators=(",", ":")),
        SLUICE_ADMIN_PORT=str(free_port()),
        SLUICE_STATS_PORT=str(free_port()),
        SLUICE_METRICS_PORT=str(free_port()),
        SLUICE_BIND_HOST="127.0.0.1",
    )
    env.update(overrides)
    return env


def http(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """One ``GET`` with ``Connection: close``; status, headers (lower-case) and body."""
    lines = [f"GET {path} HTTP/1.1", "Host: hello.default.svc", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
    if parsed.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return int(status_line.split()[1]), parsed, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2 :]


@pytest.fixture
def qp(echo_port: int, tmp_path: Path) -> Iterator[QueueProxyProcess]:
    proc = start_queue_proxy(env_for(echo_port), tmp_path)
    try:
        yield proc
    finally:
        kill(proc.proc)


def test_v123_env_serves_traffic_and_probes(qp: QueueProxyProcess) -> None:
    # start_queue_proxy already saw the kubelet's probe answered 200 "queue".
    assert kubelet_probe(qp.port) == (200, b"queue")
    status, _, body = http(qp.port, "/healthz", ACTIVATOR_PROBE)
    assert (status, body) == (200, b"queue")
    status, _, body = http(qp.port, "/", {"K-Network-Probe": "probe", "K-Network-Hash": "h"})
    assert status == 200
    status, _, body = http(qp.port, "/hello")
    assert status == 200 and body.isdigit()
    # Knative's default config-observability: no request metrics port at all.
    with pytest.raises(ConnectionRefusedError):
        http(int(qp.env["SLUICE_METRICS_PORT"]), "/metrics")
    status, headers, _ = http(qp.stats_port, "/metrics")
    assert status == 200 and headers["content-type"] == "application/protobuf"


def test_w3c_trace_context_reaches_the_app_untouched(qp: QueueProxyProcess) -> None:
    sent = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}
    status, _, body = http(qp.port, "/headers", sent)
    assert status == 200
    seen = json.loads(body)
    assert {k: seen.get(k) for k in sent} == sent


def test_multi_container_probes_gate_readiness_on_every_container(
    echo_port: int, tmp_path: Path
) -> None:
    sidecar_ok = SIDECAR_PROBE.replace("8090", str(echo_port))
    sidecar_down = SIDECAR_PROBE.replace("8090", str(closed_port()))
    user = json.dumps(
        {"tcpSocket": {"port": echo_port, "host": "127.0.0.1"}, "successThreshold": 1}
    )
    ready = start_queue_proxy(
        env_for(
            echo_port,
            ENABLE_MULTI_CONTAINER_PROBES="true",
            SERVING_READINESS_PROBE=f"[{user},{sidecar_ok}]",
        ),
        tmp_path,
    )
    try:
        assert kubelet_probe(ready.port) == (200, b"queue")
    finally:
        kill(ready.proc)
    env = env_for(
        echo_port,
        ENABLE_MULTI_CONTAINER_PROBES="true",
        SERVING_READINESS_PROBE=f"[{user},{sidecar_down}]",
    )
    with (tmp_path / "down.err").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "queueproxy"], cwd=ROOT, env=env, stderr=err)
    try:
        port = int(env["QUEUE_SERVING_PORT"])
        deadline = time.monotonic() + 15
        while (answer := kubelet_probe(port)) is None:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # The user container is up, the sidecar is not: the pod is not ready.
        assert answer == (503, b"")
        assert http(port, "/healthz", ACTIVATOR_PROBE)[0] == 503
    finally:
        kill(proc)


def test_prometheus_request_metrics_use_the_v123_names(echo_port: int, tmp_path: Path) -> None:
    env = env_for(
        echo_port,
        CONTAINER_CONCURRENCY="1",
        OBSERVABILITY_CONFIG=observability_json(request_metrics="prometheus"),
    )
    qp = start_queue_proxy(env, tmp_path)
    try:
        assert http(qp.port, "/hello")[0] == 200
        status, headers, body = http(int(env["SLUICE_METRICS_PORT"]), "/metrics")
    finally:
        kill(qp.proc)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    scope = (
        'otel_scope_name="knative.dev/serving/pkg/queue",otel_scope_schema_url="",'
        'otel_scope_version=""'
    )
    assert "# TYPE kn_serving_invocation_duration_seconds histogram" in text
    assert (
        f'kn_serving_invocation_duration_seconds_bucket{{http_response_status_code="200",'
        f'{scope},le="+Inf"}} 1\n'
    ) in text
    count = "kn_serving_invocation_duration_seconds_count"
    assert f'{count}{{http_response_status_code="200",{scope}}} 1\n' in text
    assert f"kn_serving_queue_depth{{{scope}}} 1\n" in text
    assert 'target_info{k8s_container_name="queue-proxy",k8s_namespace_name="default",' in text
    assert "revision_request_count" not in text  # v1.10.2's names are not served here


def test_full_duplex_app_answers_while_the_body_streams(tmp_path: Path) -> None:
    app, app_port = start_app("duplex_app.py")
    try:
        qp = start_queue_proxy(env_for(app_port, ENABLE_HTTP_FULL_DUPLEX="true"), tmp_path)
        try:
            with socket.create_connection(("127.0.0.1", qp.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /duplex HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nping1\r\n"
                )
                # The echo of the first chunk must arrive before the body is finished.
                got = b""
                while b"ping1" not in got:
                    chunk = sock.recv(4096)
                    assert chunk, got
                    got += chunk
                assert got.startswith(b"HTTP/1.1 200 ")
                sock.sendall(b"5\r\nping2\r\n")
                while b"ping2" not in got:
                    chunk = sock.recv(4096)
                    assert chunk, got
                    got += chunk
                sock.sendall(b"0\r\n\r\n")
        finally:
            kill(qp.proc)
    finally:
        kill(app)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"OBSERVABILITY_CONFIG": "{"}, "queue-proxy: invalid value for OBSERVABILITY_CONFIG: "),
        ({"QUEUE_PROXY_TLS_MIN_VERSION": "1.0"}, "queue-proxy: invalid value for QUEUE_PROXY_TLS"),
        ({"ENABLE_MULTI_CONTAINER_PROBES": "yes"}, "queue-proxy: invalid value for ENABLE_MULTI"),
        (
            {"SERVING_READINESS_PROBE": '[{"grpc":{"port":"x"}}]'},
            "queue-proxy: invalid value for SERVING_READINESS_PROBE: [0].grpc.port must be",
        ),
        ({"SERVING_POD": None}, "queue-proxy: required environment variable SERVING_POD is not"),
    ],
)
def test_bad_v123_env_exits_1_with_one_line_before_listening(
    overrides: dict[str, str | None], message: str
) -> None:
    env = env_for(closed_port())
    for key, value in overrides.items():
        if value is None:
            del env[key]
        else:
            env[key] = value
    done = subprocess.run(
        [sys.executable, "-m", "queueproxy"], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert kubelet_probe(int(env["QUEUE_SERVING_PORT"])) is None  # nothing ever listened


def test_grpc_readiness_probe_follows_the_health_service(tmp_path: Path) -> None:
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        # As the controller writes a user container's `grpc: {port}, periodSeconds: 1`
        # probe after defaulting (normal mode: one attempt per kubelet probe).
        probe = (
            f'{{"grpc":{{"port":{grpc_port},"service":""}},"timeoutSeconds":1,'
            '"periodSeconds":1,"successThreshold":1,"failureThreshold":3}'
        )
        qp = start_queue_proxy(env_for(grpc_port, SERVING_READINESS_PROBE=probe), tmp_path)
        try:
            assert kubelet_probe(qp.port) == (200, b"queue")
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert kubelet_probe(qp.port) == (503, b"")
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            assert kubelet_probe(qp.port) == (200, b"queue")
        finally:
            kill(qp.proc)
    finally:
        server.stop(None)
