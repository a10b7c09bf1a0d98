"""``python -m bench.soak``: Knative #13583 replayed, a soak of abandoned requests (issue 15).

Each component runs in turn in front of ``examples/apps/info.py`` with capacity 2 and 30 s
handlers, while an open-loop generator starts ``--rate`` clients a second (200) that give up
after ``--give-up`` seconds (1 s) and close, for ``--minutes`` (15): half speak HTTP/1.1
with ``Connection: close``, half HTTP/1.0, as ``ab`` and health checkers do. Every
``--interval`` seconds (10) the component's RSS, open file descriptors and TCP sockets are
sampled. The run passes when RSS plateaus: growth over the last third of the run (the last
5 minutes of 15) under 2 %.

Components: ``queue-proxy`` (Sluice's, containerConcurrency 2), ``activator`` (Sluice's,
file mode, a revision of containerConcurrency 2 in front of a Sluice queue-proxy) and
``go-queue-proxy`` (Knative's, ``tests/kube/peers/bin/queue`` from ``make peers``; it binds
ports 8022 and 9090, which must be free).

Writes ``bench/results/soak/<component>.csv``, ``soak.png`` and ``summary.json``; exit code
1 if a component did not plateau. ``--short`` is a two-minute run of each.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import http.client
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bench.hotpath.procs import Proc, ProcGroup, free_port, probe_ok, wait_until
from bench.hotpath.targets import GO_FIXED_PORTS, _port_taken, go_queue_proxy_env
from bench.stack import REPO, start_app, start_queue_proxy

RESULTS = REPO / "bench" / "results" / "soak"
GO_QUEUE = REPO / "tests" / "kube" / "peers" / "bin" / "queue"
COMPONENTS = ("queue-proxy", "activator", "go-queue-proxy")
HOST = "hello.default.localhost"


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a component process."""

    t: float
    rss_mb: float
    fds: int
    tcp: int
    started: int
    answered: int


def plateau_growth(samples: Sequence[Sample], tail: float = 1 / 3) -> float:
    """RSS growth (a fraction) over the last ``tail`` of the run: last sample against the
    first sample of that window. Raises ``ValueError`` with fewer than two samples in it."""
    if not samples:
        raise ValueError("samples: empty")
    end = samples[-1].t
    window = [s for s in samples if s.t >= end - (end - samples[0].t) * tail]
    if len(window) < 2:
        raise ValueError("samples: fewer than two in the plateau window")
    return (window[-1].rss_mb - window[0].rss_mb) / window[0].rss_mb


# ----------------------------------------------------------------------------- the load


class Load:
    """An open-loop generator of clients that give up: started, answered (any status)."""

    def __init__(self, port: int, rate: float, give_up: float, sleep: float) -> None:
        self.port = port
        self.rate = rate
        self.give_up = give_up
        self.sleep = sleep
        self.started = 0
        self.answered = 0
        #: Statuses of the answers that came in time, by code.
        self.statuses: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while (now := loop.time()) < start + seconds:
            due = int((now - start) * self.rate)
            while n < due:
                n += 1
                task = loop.create_task(self._client(n))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0.005)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, n: int) -> None:
        self.started += 1
        version = b"HTTP/1.1" if n % 2 else b"HTTP/1.0"
        request = b"GET /?sleep=%g %s\r\nHost: %s\r\nConnection: close\r\n\r\n" % (
            self.sleep, version, HOST.encode(),
        )  # fmt: skip
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), self.give_up
            )
            writer.write(request)
            line = await asyncio.wait_for(reader.readline(), self.give_up)
            self.answered += 1
            parts = line.split(b" ", 2)
            self.statuses[int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0] += 1
        except (OSError, TimeoutError):
            pass
        finally:
            if writer is not None:
                writer.close()  # the client gives up: a FIN, as ab or hey -t 1 leave


# ------------------------------------------------------------------------ components


def _activator(group: ProcGroup, backend_port: int, out: Path) -> tuple[Proc, int]:
    cfg = out / "activator.yaml"
    cfg.write_text(
        "routes:\n- name: hello\n  namespace: default\n"
        "  traffic:\n  - revisionName: hello-1\n    percent: 100\n"
        "revisions:\n- name: hello-1\n  namespace: default\n  containerConcurrency: 2\n"
        f"  endpoints: ['127.0.0.1:{backend_port}']\n"
    )
    port = free_port()
    argv = [
        sys.executable, "-m", "activator", "--config", str(cfg), "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", str(free_port()), "--log-level", "warning",
    ]  # fmt: skip
    proc = group.spawn("activator", argv, cwd=REPO, env={**os.environ, "POD_NAME": "soak"})
    probe = {"K-Network-Probe": "activator"}
    if wait_until(proc, lambda: probe_ok(port, probe, b"activator"), 30) is None:
        raise RuntimeError(f"activator was not ready: {proc.log_tail(3)}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the revision's pod probed healthy
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/", headers={"Host": HOST})
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    return proc, port


def _go_queue_proxy(group: ProcGroup, app_port: int) -> tuple[Proc, int]:
    """Knative's queue-proxy, as ``bench.hotpath`` runs it: its admin and stats ports are
    compiled in, so they must be free (no other Go queue-proxy on the machine)."""
    taken = [port for port in GO_FIXED_PORTS if _port_taken(port)]
    if taken:
        raise RuntimeError(f"go queue-proxy: ports {taken} are taken (run in unshare --net)")
    port = free_port()
    env = go_queue_proxy_env(
        backend_port=app_port, serving_port=port, tls_port=free_port(), container_concurrency=2
    )
    env["PATH"] = os.environ.get("PATH", "")
    proc = group.spawn("go-queue-proxy", [str(GO_QUEUE)], env=env, cwd=REPO)
    probe = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}
    if wait_until(proc, lambda: probe_ok(port, probe, b"queue"), 30) is None:
        raise RuntimeError(f"go queue-proxy was not ready: {proc.log_tail(3)}")
    return proc, port


def start(component: str, group: ProcGroup, out: Path) -> tuple[Proc, int]:
    _, app_port = start_app(group, env={"SLEEP_SECONDS": "0"})
    if component == "queue-proxy":
        return start_queue_proxy(group, app_port, container_concurrency=2)
    if component == "activator":
        _, qp_port = start_queue_proxy(group, app_port, container_concurrency=2, name="qp")
        return _activator(group, qp_port, out)
    return _go_queue_proxy(group, app_port)


def sample(proc: psutil.Process, t: float, load: Load) -> Sample:
    rss = proc.memory_info().rss / 1e6
    return Sample(
        round(t, 1), round(rss, 2), proc.num_fds(), len(proc.net_connections(kind="tcp")),
        load.started, load.answered,
    )  # fmt: skip


async def soak(component: str, minutes: float, rate: float, give_up: float, interval: float,
               out: Path) -> tuple[list[Sample], dict[int, int]]:  # fmt: skip
    (out / "logs").mkdir(parents=True, exist_ok=True)
    with ProcGroup(out / "logs") as group:
        proc, port = start(component, group, out)
        ps = psutil.Process(proc.popen.pid)
        load = Load(port, rate, give_up, sleep=30)
        samples: list[Sample] = []
        loop = asyncio.get_running_loop()
        begin = loop.time()
        runner = loop.create_task(load.run(minutes * 60))
        while not runner.done():
            samples.append(sample(ps, loop.time() - begin, load))
            print(f"{component}: {samples[-1]}", file=sys.stderr, flush=True)
            await asyncio.wait([runner], timeout=interval)
        samples.append(sample(ps, loop.time() - begin, load))
        await runner
    return samples, dict(load.statuses)


def plot(results: dict[str, list[Sample]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, samples in results.items():
        ts = [s.t / 60 for s in samples]
        axes[0].plot(ts, [s.rss_mb for s in samples], label=name)
        axes[1].plot(ts, [s.fds for s in samples], label=name)
        axes[2].plot(ts, [s.tcp for s in samples], label=name)
    for ax, title in zip(axes, ("RSS (MB)", "open fds", "TCP sockets"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Soak: capacity 2, 30 s handlers, clients giving up after 1 s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--components", default="queue-proxy,activator")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--give-up", type=float, default=1.0)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--short", action="store_true", help="two minutes per component")
    p.add_argument("--out", type=Path, default=RESULTS)
    ns = p.parse_args(argv)
    minutes = 2.0 if ns.short else ns.minutes
    out: Path = ns.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Sample]] = {}
    summary: dict[str, object] = {"minutes": minutes, "rate": ns.rate, "give_up": ns.give_up}
    ok = True
    for component in ns.components.split(","):
        if component not in COMPONENTS:
            p.error(f"--components: unknown {component!r} (known: {', '.join(COMPONENTS)})")
        samples, statuses = asyncio.run(
            soak(component, minutes, ns.rate, ns.give_up, ns.interval, out)
        )
        results[component] = samples
        with (out / f"{component}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
            writer.writeheader()
            writer.writerows(asdict(s) for s in samples)
        growth = plateau_growth(samples)
        passed = growth < 0.02
        ok = ok and passed
        summary[component] = {
            "rss_mb_first": samples[0].rss_mb,
            "rss_mb_max": max(s.rss_mb for s in samples),
            "rss_mb_last": samples[-1].rss_mb,
            "tail_growth": round(growth, 4),
            "plateau": passed,
            "fds_max": max(s.fds for s in samples),
            "tcp_max": max(s.tcp for s in samples),
            "clients": samples[-1].started,
            "answered": samples[-1].answered,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
        }
        print(f"{component}: {summary[component]}", flush=True)
    plot(results, out / "soak.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
