"""Command line and orchestration for ``python -m bench.hotpath`` (see the package docstring)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench.hotpath.backends import Backend, start_backend
from bench.hotpath.loadgen import LoadgenError, LoadResult, run_hey, run_wrk, tool_version
from bench.hotpath.procs import (
    ProcGroup,
    children_cpu_seconds,
    have,
    in_netns,
    machine_busy_seconds,
    rerun_in_netns,
    tree_cpu_seconds,
)
from bench.hotpath.report import (
    FIXED_RATE,
    SATURATION,
    SATURATION_C50,
    Point,
    Run,
    TargetResult,
    render_markdown,
    summarise,
    to_json,
    with_ratios,
)
from bench.hotpath.targets import DEFAULT_TARGETS, TARGETS, Running, Skip, start_target

REPO = Path(__file__).resolve().parents[2]
WARMUP_S = 1.0
#: wrk connections at saturation, and for the latency-under-load point.
CONNECTIONS = 32
CONNECTIONS_C50 = 50
#: hey workers x per-worker rate = the fixed ~1000 req/s load point.
HEY_WORKERS, HEY_QPS = 10, 100
#: Targets that also get the 50-connection latency point.
C50_TARGETS = frozenset({"queue-proxy-cc10", "go-queue-proxy-cc10"})


@dataclass(frozen=True, slots=True)
class CpuPlan:
    load: int | None
    backend: int | None
    proxy: int | None
    description: str


def plan_cpus(cpu_count: int, taskset: bool) -> CpuPlan:
    """Which CPU each role is pinned to; see the package docstring for why."""
    if not taskset or cpu_count < 2:
        why = "taskset not installed" if not taskset else "only 1 CPU"
        return CpuPlan(None, None, None, f"none ({why})")
    if cpu_count >= 3:
        return CpuPlan(0, 2, 1, "wrk/hey on CPU 0, target on CPU 1, backend on CPU 2")
    return CpuPlan(0, 0, 1, "wrk/hey and backend on CPU 0, target on CPU 1")


def progress(message: str) -> None:
    print(f"[hotpath] {message}", file=sys.stderr, flush=True)


def _measure(target: Running, backend: Backend, load: Callable[[], LoadResult]) -> Run:
    m0, g0 = machine_busy_seconds(), children_cpu_seconds()
    t0, b0 = tree_cpu_seconds(target.pid), tree_cpu_seconds(backend.proc.pid)
    res = load()
    t1, b1 = tree_cpu_seconds(target.pid), tree_cpu_seconds(backend.proc.pid)
    m1, g1 = machine_busy_seconds(), children_cpu_seconds()
    ours = (g1 - g0) + (b1 - b0) + (0.0 if target.pid == backend.proc.pid else t1 - t0)
    per_req = 1e6 / res.requests if res.requests else None
    return Run(
        rps=res.rps,
        requests=res.requests,
        duration_s=res.duration_s,
        cpu_us_per_req=None if per_req is None else (t1 - t0) * per_req,
        backend_cpu_us_per_req=None if per_req is None else (b1 - b0) * per_req,
        latency_ms=dict(res.latency_ms),
        errors=res.errors,
        non_2xx=res.non_2xx,
        foreign_cpu_s=max(0.0, (m1 - m0) - ours),
    )


class _Loads:
    """The load generators and the sanity check for one target."""

    def __init__(self, target: Running, plan: CpuPlan, duration: float) -> None:
        self.target = target
        self.cpu = plan.load
        self.duration = duration

    def wrk(self, connections: int, seconds: float) -> LoadResult:
        t = self.target
        return run_wrk(
            t.url, connections=connections, duration_s=seconds, headers=t.headers, cpu=self.cpu
        )

    def hey(self) -> LoadResult:
        t = self.target
        return run_hey(
            t.url,
            duration_s=self.duration,
            concurrency=HEY_WORKERS,
            per_worker_qps=HEY_QPS,
            headers=t.headers,
            cpu=self.cpu,
        )

    def check(self, run: Run) -> Run:
        t = self.target
        if t.proc is not None and not t.proc.alive():
            raise LoadgenError(f"{t.name} exited during the run: {t.proc.log_tail(3)}")
        if run.requests == 0:
            raise LoadgenError(f"{t.name}: no successful requests")
        return run


def measure_targets(
    targets: list[Running], backend: Backend, plan: CpuPlan, runs: int, duration: float
) -> dict[str, dict[str, Point] | LoadgenError]:
    """Every load point for every target, in rounds: each round visits every target once.

    On a shared machine the background load drifts over minutes; measuring target after
    target in rounds puts each one's runs at the same moments as nginx's, so the medians
    (and so the ratios) compare like with like.
    """
    loads = {t.name: _Loads(t, plan, duration) for t in targets}
    failed: dict[str, LoadgenError] = {}
    sat: dict[str, list[Run]] = {t.name: [] for t in targets}
    rate: dict[str, list[Run]] = {t.name: [] for t in targets}
    c50: dict[str, list[Run]] = {t.name: [] for t in targets if t.name in C50_TARGETS}

    def each(body: Callable[[Running, _Loads], None]) -> None:
        for t in targets:
            if t.name in failed:
                continue
            try:
                body(t, loads[t.name])
            except LoadgenError as exc:
                progress(f"{t.name}: failed: {exc}")
                failed[t.name] = exc

    def warm(t: Running, load: _Loads) -> None:
        progress(f"{t.name}: warm-up {WARMUP_S:g} s")
        load.wrk(CONNECTIONS, WARMUP_S)

    each(warm)
    for i in range(runs):

        def saturation(t: Running, load: _Loads, i: int = i) -> None:
            progress(
                f"{t.name}: saturation round {i + 1}/{runs} (wrk -t1 -c{CONNECTIONS}, "
                f"{duration:g} s)"
            )
            sat[t.name].append(
                load.check(_measure(t, backend, lambda: load.wrk(CONNECTIONS, duration)))
            )
            if t.name in c50:
                # The latency point gets a run in every round too: one run alone is at the
                # mercy of whatever else the host does in those seconds.
                progress(
                    f"{t.name}: latency round {i + 1}/{runs} (wrk -t1 -c{CONNECTIONS_C50}, "
                    f"{duration:g} s)"
                )
                wrk_c50 = functools.partial(load.wrk, CONNECTIONS_C50, duration)
                c50[t.name].append(load.check(_measure(t, backend, wrk_c50)))

        each(saturation)
    for i in range(runs):

        def fixed(t: Running, load: _Loads, i: int = i) -> None:
            progress(f"{t.name}: ~1000 req/s round {i + 1}/{runs} (hey -c10 -q100, {duration:g} s)")
            rate[t.name].append(load.check(_measure(t, backend, load.hey)))

        each(fixed)
    out: dict[str, dict[str, Point] | LoadgenError] = dict(failed)
    for t in targets:
        if t.name in failed:
            continue
        points = {SATURATION: summarise(sat[t.name]), FIXED_RATE: summarise(rate[t.name])}
        if c50.get(t.name):
            points[SATURATION_C50] = summarise(c50[t.name])
        out[t.name] = points
    return out


def environment(plan: CpuPlan, backend: Backend, runs: int, duration: float) -> dict[str, Any]:
    tools = {
        "wrk": tool_version(["wrk", "-v"]),
        "hey": tool_version(["dpkg-query", "-W", "-f=${Version}", "hey"]),
        "nginx": tool_version(["nginx", "-v"]) if have("nginx") else None,
        "haproxy": tool_version(["haproxy", "-v"]) if have("haproxy") else None,
        "python": platform.python_version(),
    }
    return {
        "cpu_count": os.cpu_count(),
        "pinning": plan.description,
        "pinned": plan.proxy is not None,
        "cpus": {"load": plan.load, "backend": plan.backend, "target": plan.proxy},
        "backend": backend.kind,
        "runs": runs,
        "duration_s": duration,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "tools": tools,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_at_start": os.getloadavg(),
    }


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind through every finally, which stops our processes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per load point (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma list from: {', '.join(TARGETS)} (default all but go-queue-proxy-cc10)",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        help="run in a private network namespace (unshare --net, as root): Go's queue-proxy "
        "binds fixed ports that other Go sidecars on the machine may hold",
    )
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s (CI smoke)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 2.0
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.runs < 1 or args.duration <= 0 or args.duration > 600:
        parser.error("--runs must be >= 1 and --duration in (0, 600]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.netns and not in_netns():
        return rerun_in_netns("bench.hotpath", sys.argv[1:] if argv is None else argv, REPO)
    for tool in ("wrk", "hey"):
        if not have(tool):
            print(f"bench.hotpath: {tool} is not installed", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    plan = plan_cpus(os.cpu_count() or 1, have("taskset"))
    with (
        tempfile.TemporaryDirectory(prefix="sluice-hotpath-") as tmp,
        ProcGroup(Path(tmp)) as group,
    ):
        progress(f"starting the backend; pinning: {plan.description}")
        backend = start_backend(group, plan.backend, REPO)
        env = environment(plan, backend, args.runs, args.duration)
        started: list[Running] = []
        skipped: dict[str, TargetResult] = {}
        try:
            for name in args.targets:
                progress(f"{name}: starting")
                try:
                    started.append(start_target(name, group, backend, plan.proxy, REPO))
                except Skip as skip:
                    progress(f"{name}: skipped: {skip}")
                    skipped[name] = TargetResult(name, "skipped", note=str(skip))
            measured = measure_targets(started, backend, plan, args.runs, args.duration)
        finally:
            for target in started:
                if target.proc is not None:
                    group.stop(target.proc)
        by_name = {t.name: t for t in started}
        results: list[TargetResult] = []
        for name in args.targets:
            if name in skipped:
                results.append(skipped[name])
                continue
            target = by_name[name]
            outcome = measured[name]
            if isinstance(outcome, LoadgenError):
                results.append(TargetResult(name, "failed", note=str(outcome)))
                continue
            results.append(
                TargetResult(
                    name,
                    "ok",
                    cpu_of=target.cpu_of,
                    startup_s=target.startup_s,
                    idle_rss_kib=target.idle_rss_kib,
                    points=outcome,
                )
            )
    results = with_ratios(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hotpath.json").write_text(json.dumps(to_json(results, env), indent=2) + "\n")
    markdown = render_markdown(results, env)
    (args.out / "hotpath.md").write_text(markdown)
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench.hotpath: interrupted; all started processes were stopped", file=sys.stderr)
        sys.exit(130)
