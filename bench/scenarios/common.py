"""What every scenario shares: its context, a locust phase with progress, the standard plots."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import plots
from bench.hotpath.procs import ProcGroup
from bench.locustrun import LocustRun, locust_records, run_locust, wait_locust
from bench.monitor import PodSampler, Progress, RecordCounter, pods_line, write_samples
from bench.records import Record, write_records
from bench.stack import Sluice
from bench.summary import pods_summary, series

#: The autoscaler settings every embedded scenario starts with: Knative's algorithm with
#: windows short enough for a 30 s run (Knative's defaults are a 60 s stable window and a
#: 30 s scale-to-zero grace period).
FAST_AUTOSCALER = ("stable-window=6s", "scale-to-zero-grace-period=2s")
HELLO = "hello.default.localhost"


@dataclass
class Context:
    """One scenario run: where its files go, how long and hard to push, who owns processes."""

    name: str
    out: Path
    duration: float
    users: int | None
    quick: bool
    processes: int
    group: ProcGroup
    progress: Progress
    files: list[str] = field(default_factory=list)

    def users_or(self, default: int) -> int:
        return self.users if self.users else default

    def path(self, name: str) -> Path:
        """A file in the scenario's directory, listed in ``summary.json``."""
        self.files.append(name)
        return self.out / name


@dataclass
class Phase:
    """The outcome of one locust phase: its records and the time it started."""

    label: str
    t0: float
    records: list[Record]


def status_of(counter: RecordCounter, sampler: PodSampler | None) -> Callable[[], str]:
    def status() -> str:
        rows, failures = counter.update()
        return f"{rows} req, {failures} failed  {pods_line(sampler)}".rstrip()

    return status


def locust_phase(
    ctx: Context,
    run: LocustRun,
    sampler: PodSampler | None = None,
    during: Sequence[tuple[float, Callable[[], None]]] = (),
) -> Phase:
    """Run locust; ``during`` actions (seconds after start, callable) run while it does."""
    counter = RecordCounter(ctx.out / f"records-{run.label}")
    ctx.progress.set(
        f"{run.label} ({run.users} users)", run.run_time_s, status_of(counter, sampler)
    )
    t0 = time.time()
    popen = run_locust(ctx.group, run, ctx.out, wait=False)
    for at, action in sorted(during, key=lambda d: d[0]):
        delay = t0 + at - time.time()
        if delay > 0:
            time.sleep(delay)
        if popen.poll() is not None:
            break
        action()
    wait_locust(ctx.group, popen, run)
    for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", ".html"):
        if (ctx.out / f"locust-{run.label}{suffix}").exists():
            ctx.files.append(f"locust-{run.label}{suffix}")
    records = locust_records(ctx.out, run.label)
    write_records(ctx.path(f"requests-{run.label}.csv"), records)
    return Phase(run.label, t0, records)


def sampled(sluice: Sluice) -> PodSampler:
    return PodSampler(sluice).start()


def finish_pods(
    ctx: Context,
    sampler: PodSampler,
    t0: float,
    title: str,
    marks: Mapping[str, float] | None = None,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Stop the sampler; write ``pods.csv`` and ``pods.png``; the per-revision summary."""
    samples = sampler.stop()
    if only:
        samples = [s for s in samples if s["revision"] in only]
    write_samples(ctx.path("pods.csv"), samples)
    plots.pods_over_time(samples, t0, ctx.path("pods.png"), title, marks)
    return pods_summary(samples)


def latency_plot(
    ctx: Context,
    phases: Sequence[Phase],
    title: str,
    marks: Mapping[str, float] | None = None,
    log: bool = False,
    width: float = 1.0,
) -> None:
    data = {p.label: series(p.records, p.t0, width) for p in phases}
    plots.latency_over_time(data, ctx.path("latency.png"), title, marks, log)


def base_env(host_header: str, path: str = "/", rate: float = 0.0) -> dict[str, str]:
    env = {"SLUICE_BENCH_HOST_HEADER": host_header, "SLUICE_BENCH_PATH": path}
    if rate:
        env["SLUICE_BENCH_RATE"] = f"{rate:g}"
    return env
