"""``python -m queueproxy`` as a real process in front of a real app process (reference §1).

Every queue-proxy here gets only the environment Knative's controller sets on the sidecar
(plus ``SLUICE_*`` ports, and a one-second drain quiet period where a test drains), and sits
in front of ``tests/e2e/apps/qp_app.py``. Processes are started per module or per test, on
free loopback ports, and killed by PID in the fixtures' ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from proxy.dataplane.autoscaler_stat import Stat
from proxy.dataplane.autoscaler_stat_pb import decode_stat
from tests.component.engine_harness import RawClient
from tests.ports import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "e2e" / "apps" / "qp_app.py"
KUBELET_PROBE = b"User-Agent: kube-probe/1.30\r\nK-Network-Probe: queue\r\n"
QUEUE_FULL = b"pending request queue full\n"
SHUTTING_DOWN = b"shutting down\n"
MIB = 1024 * 1024


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()  # a pipe left open is a ResourceWarning, and warnings fail tests


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, str(APP), "0"], stdout=subprocess.PIPE, cwd=ROOT, env={}
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "the app did not start"
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("PORT="), line
        yield int(line[5:])
    finally:
        kill(proc)


def knative_env(user_port: int, **extra: str) -> dict[str, str]:
    """Exactly what Knative's controller sets on the sidecar, plus Sluice's port overrides."""
    env = {
        "SERVING_NAMESPACE": "ns",
        "SERVING_CONFIGURATION": "cfg",
        "SERVING_REVISION": "rev",
        "SERVING_POD": "pod-1",
        "SERVING_POD_IP": "127.0.0.1",
        "SERVING_SERVICE": "svc",
        "QUEUE_SERVING_PORT": str(free_port()),
        "QUEUE_SERVING_TLS_PORT": str(free_port()),
        "USER_PORT": str(user_port),
        "CONTAINER_CONCURRENCY": "1",
        "REVISION_TIMEOUT_SECONDS": "30",
        "SERVING_LOGGING_CONFIG": '{"level": "info", "encoding": "json"}',
        "SERVING_LOGGING_LEVEL": "info",
        "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
        "SERVING_READINESS_PROBE": json.dumps(
            {"tcpSocket": {"host": "127.0.0.1", "port": user_port}, "successThreshold": 1}
        ),
        "SLUICE_ADMIN_PORT": str(free_port()),
        "SLUICE_STATS_PORT": str(free_port()),
        "SLUICE_METRICS_PORT": str(free_port()),
    }
    env.update(extra)
    return env


@dataclass
class QueueProxyProcess:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    stderr: Path
    #: VmRSS (KiB) once ready, before any traffic but the readiness probes.
    idle_rss_kib: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.env["QUEUE_SERVING_PORT"])

    @property
    def stats_port(self) -> int:
        return int(self.env["SLUICE_STATS_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def kubelet_probe(port: int) -> tuple[int, bytes] | None:
    """One readiness probe as the kubelet sends it; None if nothing listens yet."""
    request = b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n" + KUBELET_PROBE + b"\r\n"
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(request)
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def start_queue_proxy(env: dict[str, str], log_dir: Path) -> QueueProxyProcess:
    stderr = log_dir / f"qp-{env['QUEUE_SERVING_PORT']}.err"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "queueproxy"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    qp = QueueProxyProcess(proc, env, stderr)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"queue-proxy exited: {stderr.read_text()}"
            if kubelet_probe(qp.port) == (200, b"queue"):
                break
            assert time.monotonic() < deadline, "queue-proxy never became ready"
            time.sleep(0.05)
        qp.idle_rss_kib = vm_rss_kib(proc.pid)
    except BaseException:
        kill(proc)
        raise
    return qp


@pytest.fixture(scope="module")
def qp_cc1(app_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueProxyProcess]:
    qp = start_queue_proxy(knative_env(app_port), tmp_path_factory.mktemp("qp-cc1"))
    try:
        yield qp
    finally:
        kill(qp.proc)


@pytest.fixture(scope="module")
def qp_cc0(app_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueProxyProcess]:
    env = knative_env(app_port, CONTAINER_CONCURRENCY="0")
    qp = start_queue_proxy(env, tmp_path_factory.mktemp("qp-cc0"))
    try:
        yield qp
    finally:
        kill(qp.proc)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


async def raw_get(port: int, path: bytes, extra: bytes = b"", timeout: float = 10.0) -> RawClient:
    client = await asyncio.wait_for(RawClient.connect(port), timeout)
    await client.send(b"GET %s HTTP/1.1\r\nHost: pod\r\n%s\r\n" % (path, extra))
    return client


# ------------------------------------------------------------------ start-up


@pytest.mark.timeout(30)
@pytest.mark.parametrize("missing", ["SERVING_POD", "USER_PORT", "SERVING_LOGGING_LEVEL"])
def test_missing_required_variable_exits_1_with_one_line_naming_it(missing: str) -> None:
    env = knative_env(free_port())
    del env[missing]
    done = subprocess.run(
        [sys.executable, "-m", "queueproxy"], cwd=ROOT, env=env, capture_output=True, timeout=20
    )
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines == [f"queue-proxy: required environment variable {missing} is not set"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("var", "value"),
    [("CONTAINER_CONCURRENCY", "ten"), ("USER_PORT", "70000"), ("SERVING_READINESS_PROBE", "{")],
)
def test_invalid_variable_exits_1_with_one_line_naming_it(var: str, value: str) -> None:
    env = knative_env(free_port(), **{var: value})
    done = subprocess.run(
        [sys.executable, "-m", "queueproxy"], cwd=ROOT, env=env, capture_output=True, timeout=20
    )
    assert done.returncode == 1
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith(f"queue-proxy: invalid value for {var}: ")


@pytest.mark.timeout(30)
def test_idle_rss_after_start_is_under_30_mib(qp_cc1: QueueProxyProcess) -> None:
    print(f"queue-proxy idle VmRSS: {qp_cc1.idle_rss_kib / 1024:.1f} MiB")
    assert qp_cc1.idle_rss_kib < 30 * 1024


# ------------------------------------------------------------------ breaker (CC=1)


@pytest.mark.timeout(30)
async def test_cc1_app_never_sees_two_requests_at_once(
    qp_cc1: QueueProxyProcess, app_port: int, session: aiohttp.ClientSession
) -> None:
    statuses: list[int] = []
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + 2.5

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as own:
            while loop.time() < stop_at:
                async with own.get(f"{qp_cc1.url}/concurrency-guard?ms=5") as resp:
                    await resp.read()
                    statuses.append(resp.status)

    await asyncio.gather(*(client() for _ in range(5)))
    assert statuses and set(statuses) == {200}
    async with session.get(f"http://127.0.0.1:{app_port}/guard-stats") as resp:
        guard = await resp.json()
    assert guard["violations"] == 0
    assert guard["served"] == len(statuses)


@pytest.mark.timeout(30)
async def test_burst_beyond_the_queue_gets_503_for_exactly_the_excess(
    qp_cc1: QueueProxyProcess,
) -> None:
    # CC=1 → 1 executing + 10 queued; 20 requests sent at once leave 9 without a slot.
    clients = [await asyncio.wait_for(RawClient.connect(qp_cc1.port), 5) for _ in range(20)]
    try:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        for client in clients:
            client.writer.write(b"GET /sleep?ms=250 HTTP/1.1\r\nHost: pod\r\n\r\n")

        async def answer(client: RawClient) -> tuple[int, bytes, float]:
            msg = await client.response(timeout=15)
            return msg.status, msg.body, loop.time() - sent

        answers = await asyncio.gather(*(answer(c) for c in clients))
    finally:
        for client in clients:
            client.writer.transport.abort()
    ok = [a for a in answers if a[0] == 200]
    rejected = [a for a in answers if a[0] == 503]
    assert len(ok) == 11 and len(rejected) == 9, [a[:2] for a in answers]
    assert all(body == b"slept 250" for _, body, _ in ok)
    assert all(body == QUEUE_FULL for _, body, _ in rejected)
    # Rejections come at once, before even the first admitted request is done.
    assert max(t for _, _, t in rejected) < min(t for _, _, t in ok)


# ------------------------------------------------------------------ streaming, bodies, upgrades


@pytest.mark.timeout(30)
async def test_streamed_chunks_arrive_as_the_app_writes_them(
    qp_cc1: QueueProxyProcess, session: aiohttp.ClientSession
) -> None:
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[float, bytes]] = []
    async with session.get(f"{qp_cc1.url}/stream?chunks=5&interval=200") as resp:
        assert resp.status == 200
        async for data in resp.content.iter_any():
            arrivals.append((loop.time(), data))
    body = b"".join(data for _, data in arrivals)
    assert body == b"".join(b"chunk %d\n" % i for i in range(5))
    # Not buffered: the first chunk arrives ~0.8 s before the last one.
    assert len(arrivals) >= 4
    assert arrivals[-1][0] - arrivals[0][0] >= 0.6


@pytest.mark.timeout(60)
async def test_50_mib_upload_streams_through_with_flat_memory(
    qp_cc1: QueueProxyProcess, session: aiohttp.ClientSession
) -> None:
    total = 50 * MIB
    block = b"x" * (64 * 1024)
    peak = vm_rss_kib(qp_cc1.pid)
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, vm_rss_kib(qp_cc1.pid))
            await asyncio.sleep(0.02)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    sampler = asyncio.create_task(sample())
    try:
        async with session.post(f"{qp_cc1.url}/upload", data=body()) as resp:
            text = await resp.text()
    finally:
        done.set()
        await sampler
    assert resp.status == 200
    assert text == str(total)
    print(f"queue-proxy peak VmRSS during a 50 MiB upload: {peak / 1024:.1f} MiB")
    assert peak < 80 * 1024


@pytest.mark.timeout(30)
async def test_websocket_frames_and_close_code_pass_through(
    qp_cc1: QueueProxyProcess, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{qp_cc1.url}/ws", timeout=aiohttp.ClientWSTimeout(10)) as ws:
        await ws.send_str("hello")
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "hello")
        await ws.send_bytes(b"\x00\x01\xfebinary")
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x00\x01\xfebinary")
        await ws.send_str("close:4001")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 4001
    assert ws.close_code == 4001


@pytest.mark.timeout(30)
async def test_open_websocket_holds_the_only_slot_with_cc1(
    qp_cc1: QueueProxyProcess, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{qp_cc1.url}/ws", timeout=aiohttp.ClientWSTimeout(10)) as ws:
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "ping"
        queued = asyncio.create_task(session.get(f"{qp_cc1.url}/sleep?ms=0"))
        done, _ = await asyncio.wait([queued], timeout=0.3)
        assert not done, "a request ran beside an open websocket with CC=1"
        await ws.send_str("close:1000")
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
    async with await asyncio.wait_for(queued, 5) as resp:
        assert (resp.status, await resp.text()) == (200, "slept 0")


# ------------------------------------------------------------------ autoscaler stats


async def scrape(port: int) -> Stat:
    client = await raw_get(port, b"/metrics", b"Accept: application/protobuf\r\n")
    try:
        msg = await client.response(timeout=5)
    finally:
        client.writer.transport.abort()
    assert msg.status == 200
    assert msg.header(b"content-type") == b"application/protobuf"
    return decode_stat(msg.body)


@pytest.mark.timeout(40)
async def test_stats_report_two_held_requests_as_average_two(
    qp_cc0: QueueProxyProcess, session: aiohttp.ClientSession
) -> None:
    # Wait for an idle window: afterwards every window holds only this test's traffic.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    baseline = await scrape(qp_cc0.stats_port)
    while baseline.average_concurrent_requests or baseline.request_count:
        assert loop.time() < deadline, baseline
        await asyncio.sleep(0.2)
        baseline = await scrape(qp_cc0.stats_port)
    assert baseline.pod_name == "pod-1"

    async def hold(headers: dict[str, str]) -> int:
        async with session.get(f"{qp_cc0.url}/sleep?ms=2200", headers=headers) as resp:
            await resp.read()
            return resp.status

    held = asyncio.gather(hold({}), hold({"K-Proxy-Request": "activator"}))
    windows: dict[float, Stat] = {}
    finish = loop.time() + 2.2 + 2.2  # the requests, then two full windows after them
    while loop.time() < finish:
        await asyncio.sleep(0.25)
        stat = await scrape(qp_cc0.stats_port)
        if stat.process_uptime > baseline.process_uptime:
            windows[stat.process_uptime] = stat
    assert list(await asyncio.wait_for(held, 10)) == [200, 200]
    ordered = [windows[k] for k in sorted(windows)]
    # One scrape every 0.25 s sees every 1 s window.
    uptimes = sorted(windows)
    assert all(0.9 < b - a < 1.1 for a, b in itertools.pairwise(uptimes))
    assert sum(s.request_count for s in ordered) == 2.0
    assert sum(s.proxied_request_count for s in ordered) == 1.0
    # A 2.2 s hold covers at least one whole window: exactly two in flight, one proxied.
    peak = max(ordered, key=lambda s: s.average_concurrent_requests)
    assert peak.average_concurrent_requests == pytest.approx(2.0, abs=0.02)
    assert peak.average_proxied_concurrent_requests == pytest.approx(1.0, abs=0.01)
    assert ordered[-1].average_concurrent_requests == 0.0


# ------------------------------------------------------------------ timeouts


@pytest.fixture
def qp_timeout_1s(app_port: int, tmp_path: Path) -> Iterator[QueueProxyProcess]:
    env = knative_env(app_port, REVISION_TIMEOUT_SECONDS="1")
    qp = start_queue_proxy(env, tmp_path)
    try:
        yield qp
    finally:
        kill(qp.proc)


@pytest.mark.timeout(30)
async def test_revision_timeout_answers_504_after_about_a_second(
    qp_timeout_1s: QueueProxyProcess,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    client = await raw_get(qp_timeout_1s.port, b"/sleep?ms=3000")
    try:
        msg = await client.response(timeout=10)
    finally:
        client.writer.transport.abort()
    elapsed = loop.time() - started
    assert (msg.status, msg.body) == (504, b"request timeout")
    assert 0.95 <= elapsed < 2.0


# ------------------------------------------------------------------ drain


@pytest.fixture
def qp_draining(app_port: int, tmp_path: Path) -> Iterator[QueueProxyProcess]:
    env = knative_env(app_port, CONTAINER_CONCURRENCY="0", SLUICE_DRAIN_QUIET_SECONDS="1")
    qp = start_queue_proxy(env, tmp_path)
    try:
        yield qp
    finally:
        kill(qp.proc)


@pytest.mark.timeout(40)
async def test_sigterm_serves_six_long_requests_and_new_ones_then_exits_0(
    qp_draining: QueueProxyProcess,
) -> None:
    qp = qp_draining
    loop = asyncio.get_running_loop()

    async def long_request() -> tuple[int, bytes]:
        client = await raw_get(qp.port, b"/sleep?ms=3000")
        try:
            msg = await client.response(timeout=15)
        finally:
            client.writer.transport.abort()
        return msg.status, msg.body

    async def probe() -> tuple[int, bytes]:
        client = await raw_get(qp.port, b"/", KUBELET_PROBE)
        try:
            msg = await client.response(timeout=5)
        finally:
            client.writer.transport.abort()
        return msg.status, msg.body

    requests: list[asyncio.Task[tuple[int, bytes]]] = []
    for i in range(6):
        if i:
            await asyncio.sleep(0.3)  # the scenario's arrival spacing
        requests.append(asyncio.create_task(long_request()))
        if i == 2:
            os.kill(qp.pid, signal.SIGTERM)
            deadline = loop.time() + 2
            while (answer := await probe()) != (503, SHUTTING_DOWN):
                assert answer == (200, b"queue")
                assert loop.time() < deadline, "probes never started failing"
    answers = await asyncio.wait_for(asyncio.gather(*requests), 20)
    assert answers == [(200, b"slept 3000")] * 6
    deadline = time.monotonic() + 10
    while qp.proc.poll() is None:
        assert time.monotonic() < deadline, "queue-proxy did not exit after draining"
        await asyncio.sleep(0.05)
    assert qp.proc.returncode == 0
    with contextlib.suppress(OSError):
        log = qp.stderr.read_text()
        assert "received SIGTERM" in log


# --------------------------------------------------------------------------------- TLS


@pytest.mark.timeout(60)
def test_tls_port_serves_the_same_handler_when_certs_are_mounted(
    app_port: int, tmp_path: Path
) -> None:
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(tmp_path / "tls.key"),
         "-out", str(tmp_path / "tls.crt")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    env = knative_env(app_port, SLUICE_CERTS_DIR=str(tmp_path))
    qp = start_queue_proxy(env, tmp_path)
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tls_port = int(env["QUEUE_SERVING_TLS_PORT"])
        with (
            socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw,
            context.wrap_socket(raw) as sock,
        ):
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n" + KUBELET_PROBE + b"\r\n"
            )
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.endswith(b"\r\n\r\nqueue")
        # The plain serving port stays up next to the TLS one.
        assert kubelet_probe(qp.port) == (200, b"queue")
    finally:
        kill(qp.proc)


@pytest.mark.timeout(30)
def test_unreadable_certificate_exits_1_with_one_line(app_port: int, tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate\n")
    (tmp_path / "tls.key").write_text("not a key\n")
    env = knative_env(app_port, SLUICE_CERTS_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "queueproxy"], cwd=ROOT, env=env, capture_output=True, timeout=20
    )
    assert out.returncode == 1
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "cannot load TLS certificate" in lines[0]


@pytest.mark.timeout(30)
def test_help_describes_the_environment_and_arguments_are_refused() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "queueproxy", "--help"], cwd=ROOT, capture_output=True, timeout=20
    )
    assert shown.returncode == 0
    assert b"SERVING_NAMESPACE" in shown.stdout and b"SLUICE_DRAIN_QUIET_SECONDS" in shown.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "queueproxy", "bogus"], cwd=ROOT, capture_output=True, timeout=20
    )
    assert refused.returncode == 2
    assert len(refused.stderr.decode().strip().splitlines()) == 1
