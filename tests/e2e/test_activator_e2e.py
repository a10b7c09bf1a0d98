"""``python -m activator`` as a real process in front of small real upstream processes.

The upstreams are ``tests/e2e/apps/echo_app.py`` (answers the activator probe like a
queue-proxy, reports its own port and its peak concurrency). Every process is started on
loopback with free ports and killed by PID in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.ports import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ECHO_APP = ROOT / "tests" / "e2e" / "apps" / "echo_app.py"
HOST = "hello.default.localhost"
TIMEOUT = aiohttp.ClientTimeout(total=20)


class Procs:
    """Processes started by one test, killed by PID at the end."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def echo(self) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ECHO_APP), "0", stdout=asyncio.subprocess.PIPE
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line.startswith(b"PORT="), line
        return int(line[5:])

    async def activator(self, config: Path, *args: str) -> tuple[asyncio.subprocess.Process, int]:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "activator", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(free_port()), "--log-level", "warning", *args,
            cwd=ROOT, env={**os.environ, "POD_NAME": "act-e2e"},
        )  # fmt: skip
        self.procs.append(proc)
        await wait_ready(port, proc)
        return proc, port

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


async def wait_ready(port: int, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
        for _ in range(200):
            assert proc.returncode is None, "activator exited during start-up"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(
                    f"http://127.0.0.1:{port}/", headers={"K-Network-Probe": "activator"}
                ) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("activator did not become ready")


@pytest.fixture
async def procs() -> AsyncIterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        await p.close()


def write_config(path: Path, revisions: list[dict[str, Any]], traffic: list[dict[str, Any]],
                 **top: Any) -> Path:  # fmt: skip
    for rev in revisions:
        rev.setdefault("namespace", "default")
    data = {
        "routes": [{"name": "hello", "namespace": "default", "traffic": traffic}],
        "revisions": revisions,
        **top,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    tmp.replace(path)  # atomic: the activator never reads half a file
    return path


class Webhook:
    """An in-test autoscaler stand-in recording the activator's JSON POSTs."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Webhook:
        async def handle(request: web.Request) -> web.Response:
            self.payloads.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/stats", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/stats"
        return self

    @property
    def pokes(self) -> list[dict[str, Any]]:
        return [p for p in self.payloads if p["poke"]]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def fetch(
    session: aiohttp.ClientSession, port: int, path: str = "/", **headers: str
) -> tuple[int, bytes]:
    hdrs = {"Host": HOST, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with session.get(f"http://127.0.0.1:{port}{path}", headers=hdrs) as resp:
        return resp.status, await resp.read()


async def stats_of(session: aiohttp.ClientSession, port: int) -> dict[str, int]:
    async with session.get(f"http://127.0.0.1:{port}/stats") as resp:
        out: dict[str, int] = await resp.json()
        return out


# ------------------------------------------------------------------------------ tests


@pytest.mark.timeout(30)
def test_invalid_file_fails_start_with_one_line(tmp_path: Path) -> None:
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [{name: hello, namespace: default, traffic: []}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "activator", "--config", str(bad), "--port", "0"],
        cwd=ROOT, capture_output=True, timeout=20, text=True,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "traffic" in done.stderr


@pytest.mark.timeout(60)
async def test_split_90_10_and_zero_percent_tag(tmp_path: Path, procs: Procs) -> None:
    a, b, c = await procs.echo(), await procs.echo(), await procs.echo()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        [
            {"name": "hello-a", "endpoints": [f"127.0.0.1:{a}"]},
            {"name": "hello-b", "endpoints": [f"127.0.0.1:{b}"]},
            {"name": "hello-c", "endpoints": [f"127.0.0.1:{c}"]},
        ],
        [
            {"revisionName": "hello-a", "percent": 90},
            {"revisionName": "hello-b", "percent": 10},
            {"revisionName": "hello-c", "percent": 0, "tag": "canary"},
        ],
        tagHeaderBasedRouting=True,
    )
    _, port = await procs.activator(cfg)
    total = 10_000
    counts: Counter[bytes] = Counter()
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as s:
        # Wait until every pod was probed: the split must not be skewed by start-up.
        for _ in range(100):
            if (await fetch(s, port, Knative_Serving_Tag="canary"))[1] == str(c).encode():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                status, body = await fetch(s, port)
                assert status == 200
                counts[body] += 1

        await asyncio.gather(*(worker() for _ in range(32)))
        share_b = 100 * counts[str(b).encode()] / total
        assert counts[str(c).encode()] == 0
        assert counts[str(a).encode()] + counts[str(b).encode()] == total
        assert abs(share_b - 10) <= 1.5, share_b
        # The 0 % target is reachable through its tag host and the tag header only.
        assert (await fetch(s, port, Host="canary-hello.default.localhost"))[1] == str(c).encode()
        assert (await fetch(s, port, Knative_Serving_Tag="canary"))[1] == str(c).encode()


@pytest.mark.timeout(40)
async def test_scale_from_zero_buffers_pokes_once_and_serves_all(
    tmp_path: Path, procs: Procs
) -> None:
    hook = await Webhook().start()
    try:
        traffic = [{"revisionName": "hello-1", "percent": 100}]
        cfg = write_config(
            tmp_path / "cfg.yaml",
            [{"name": "hello-1", "containerConcurrency": 10, "endpoints": []}],
            traffic,
            scaler={"url": hook.url},
        )
        _, port = await procs.activator(cfg)
        pod = await procs.echo()
        async with aiohttp.ClientSession(
            timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=200)
        ) as s:
            requests = [asyncio.ensure_future(fetch(s, port)) for _ in range(100)]
            await asyncio.sleep(2)
            assert not any(r.done() for r in requests)  # buffered, not refused
            write_config(
                cfg,
                [{"name": "hello-1", "containerConcurrency": 10,
                  "endpoints": [f"127.0.0.1:{pod}"]}],
                traffic,
                scaler={"url": hook.url},
            )  # fmt: skip
            results = await asyncio.gather(*requests)
        assert [r[0] for r in results] == [200] * 100
        assert len(hook.pokes) == 1
        assert hook.pokes[0] == {
            "namespace": "default", "revision": "hello-1",
            "concurrency": 1.0, "requests": 1.0, "poke": True,
        }  # fmt: skip
        assert any(not p["poke"] for p in hook.payloads)  # the 1 s reports flow too
    finally:
        await hook.close()


@pytest.mark.timeout(40)
async def test_cc1_over_three_pods_never_doubles_up(tmp_path: Path, procs: Procs) -> None:
    pods = [await procs.echo() for _ in range(3)]
    cfg = write_config(
        tmp_path / "cfg.yaml",
        [{"name": "hello-1", "containerConcurrency": 1,
          "endpoints": [f"127.0.0.1:{p}" for p in pods]}],
        [{"revisionName": "hello-1", "percent": 100}],
    )  # fmt: skip
    _, port = await procs.activator(cfg)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:

        async def client() -> list[int]:
            return [(await fetch(s, port, "/?sleep=0.01"))[0] for _ in range(10)]

        results = await asyncio.gather(*(client() for _ in range(30)))
        assert all(code == 200 for codes in results for code in codes)
        for p in pods:
            assert (await stats_of(s, p))["max_concurrency"] == 1


@pytest.mark.timeout(40)
async def test_overload_gets_fast_503s_with_bounded_memory(tmp_path: Path, procs: Procs) -> None:
    import psutil

    pod = await procs.echo()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        [{"name": "hello-1", "containerConcurrency": 1, "endpoints": [f"127.0.0.1:{pod}"]}],
        [{"revisionName": "hello-1", "percent": 100}],
        queueDepth=5,
    )
    proc, port = await procs.activator(cfg)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=0)) as s:
        await fetch(s, port)

        async def timed() -> tuple[int, float]:
            start = loop.time()
            status, _ = await fetch(s, port, "/?sleep=0.5")
            return status, loop.time() - start

        # Capacity 1 + queue 5 against 60 simultaneous requests: 10x overload.
        results = await asyncio.gather(*(timed() for _ in range(60)))
    ok = [t for code, t in results if code == 200]
    refused = [t for code, t in results if code == 503]
    assert len(ok) + len(refused) == 60
    assert 6 <= len(ok) <= 8, len(ok)
    assert max(refused) < 0.4  # fast: well before one request's service time
    rss = psutil.Process(proc.pid).memory_info().rss
    assert rss < 200 * 1024 * 1024


@pytest.mark.timeout(30)
async def test_unknown_revision_is_404_without_poke(tmp_path: Path, procs: Procs) -> None:
    hook = await Webhook().start()
    try:
        cfg = write_config(
            tmp_path / "cfg.yaml",
            [{"name": "hello-1", "endpoints": []}],
            [{"revisionName": "hello-1", "percent": 100}],
            scaler={"url": hook.url},
        )
        # File mode believes the split headers only from a network named as an ingress.
        _, port = await procs.activator(cfg, "--trust-routing-headers-from", "127.0.0.0/8")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for i in range(20):
                status, body = await fetch(
                    s, port,
                    **{"Knative-Serving-Revision": f"rand-{i}", "Knative-Serving-Namespace": "x"},
                )  # fmt: skip
                assert status == 404
            assert body == (
                b'Error getting active endpoint: revision.serving.knative.dev "rand-19" not found\n'
            )
        await asyncio.sleep(1.5)  # one report period: nothing may have been sent
        assert hook.payloads == []
    finally:
        await hook.close()


@pytest.mark.timeout(40)
async def test_sigterm_under_load_loses_nothing(tmp_path: Path, procs: Procs) -> None:
    pod = await procs.echo()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        [{"name": "hello-1", "containerConcurrency": 0, "endpoints": [f"127.0.0.1:{pod}"]}],
        [{"revisionName": "hello-1", "percent": 100}],
    )
    proc, port = await procs.activator(cfg, "--drain-seconds", "1")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        await fetch(s, port)
        # Long requests that outlive the drain period, plus steady traffic during it.
        slow = [asyncio.ensure_future(fetch(s, port, "/?sleep=2")) for _ in range(20)]
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        probe = await fetch(s, port, User_Agent="kube-probe/1.27")
        assert probe == (500, b"received SIGTERM from kubelet\n")
        during: list[tuple[int, bytes]] = []
        deadline = loop.time() + 0.6
        while loop.time() < deadline:
            during.append(await fetch(s, port, "/?sleep=0.01"))
        assert all(code == 200 for code, _ in during) and during
        assert [r[0] for r in await asyncio.gather(*slow)] == [200] * 20
    assert await asyncio.wait_for(proc.wait(), 10) == 0


@pytest.mark.timeout(40)
async def test_two_workers_share_the_port_and_exit_on_sigterm(tmp_path: Path, procs: Procs) -> None:
    pod = await procs.echo()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        [{"name": "hello-1", "containerConcurrency": 4, "endpoints": [f"127.0.0.1:{pod}"]}],
        [{"revisionName": "hello-1", "percent": 100}],
    )
    metrics = free_port()
    while True:  # worker 1 serves metrics on metrics + 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", metrics + 1))
                break
            except OSError:
                metrics = free_port()
    proc, port = await procs.activator(
        cfg, "--workers", "2", "--drain-seconds", "0.2", "--metrics-port", str(metrics)
    )  # the later --metrics-port wins
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                if all(
                    [(await s.get(f"http://127.0.0.1:{metrics + i}/metrics")).status == 200
                     for i in range(2)]
                ):  # fmt: skip
                    break
            await asyncio.sleep(0.05)
        codes = await asyncio.gather(*(fetch(s, port) for _ in range(50)))
        assert all(code == 200 for code, _ in codes)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 15) == 0


async def start_queue_proxy_on(procs: Procs, user_port: int, cc: int, port: int) -> None:
    """A real Sluice queue-proxy process on ``port`` in front of ``user_port``."""
    env = {
        **os.environ,
        "SERVING_NAMESPACE": "default",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-1",
        "SERVING_POD": "hello-1-pod",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(port),
        "QUEUE_SERVING_TLS_PORT": str(free_port()),
        "USER_PORT": str(user_port),
        "CONTAINER_CONCURRENCY": str(cc),
        "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "warning",
        "SLUICE_ADMIN_PORT": str(free_port()),
        "SLUICE_STATS_PORT": str(free_port()),
        "SLUICE_METRICS_PORT": str(free_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "queueproxy", cwd=ROOT, env=env
    )
    procs.procs.append(proc)


@pytest.mark.timeout(40)
async def test_cold_start_through_a_real_queue_proxy(tmp_path: Path, procs: Procs) -> None:
    traffic = [{"revisionName": "hello-1", "percent": 100}]
    cfg = write_config(
        tmp_path / "cfg.yaml",
        [{"name": "hello-1", "containerConcurrency": 1, "endpoints": []}],
        traffic,
    )
    _, port = await procs.activator(cfg)
    app = await procs.echo()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        requests = [asyncio.ensure_future(fetch(s, port, "/?sleep=0.01")) for _ in range(20)]
        # The pod is listed before its queue-proxy listens: the activator must keep probing
        # and only send traffic once the queue-proxy answers 200 "queue".
        qp = free_port()
        write_config(
            cfg,
            [{"name": "hello-1", "containerConcurrency": 1, "endpoints": [f"127.0.0.1:{qp}"]}],
            traffic,
        )
        await asyncio.sleep(1.5)
        assert not any(r.done() for r in requests)
        await start_queue_proxy_on(procs, app, 1, qp)
        results = await asyncio.gather(*requests)
        assert [r[0] for r in results] == [200] * 20
        status, body = await fetch(s, port, "/headers")
        headers = json.loads(body)
        assert status == 200 and headers["k-proxy-request"] == "activator"
        assert (await stats_of(s, app))["max_concurrency"] == 1
