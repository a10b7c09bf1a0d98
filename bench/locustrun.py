"""Run ``bench/locustfile.py`` headless in its own process group, bounded in time.

locust writes ``<prefix>_stats.csv``, ``_stats_history.csv``, ``_failures.csv`` and
``_exceptions.csv`` (``--csv``), ``<prefix>.html`` (``--html``), and our hook writes the
per-request ``requests-<pid>.csv`` files under ``records_dir``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.hotpath.loadgen import LoadgenError
from bench.hotpath.procs import ProcGroup
from bench.records import Record, read_records
from bench.stack import REPO

LOCUSTFILE = REPO / "bench" / "locustfile.py"
#: Seconds locust may take beyond ``--run-time`` (start-up, --stop-timeout, reports).
SLACK_S = 30.0
STOP_TIMEOUT_S = 2


def have_locust() -> bool:
    return importlib.util.find_spec("locust") is not None


@dataclass(frozen=True, slots=True)
class LocustRun:
    """What one locust run asks for. ``env`` carries the ``SLUICE_BENCH_*`` settings."""

    label: str
    user_class: str
    host: str
    users: int
    run_time_s: float
    env: Mapping[str, str] = field(default_factory=dict)
    processes: int = 1
    spawn_rate: float | None = None


def run_locust(
    group: ProcGroup, run: LocustRun, out: Path, *, wait: bool = True
) -> subprocess.Popen[bytes]:
    """Start locust; when ``wait``, block until it ends (``LoadgenError`` on failure)."""
    records_dir = out / f"records-{run.label}"
    records_dir.mkdir(parents=True, exist_ok=True)
    prefix = out / f"locust-{run.label}"
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", run.host, "-u", str(run.users), "-r", str(run.spawn_rate or run.users),
        "-t", f"{max(1, round(run.run_time_s))}s", "--stop-timeout", str(STOP_TIMEOUT_S),
        "--csv", str(prefix), "--csv-full-history", "--html", str(prefix) + ".html",
        "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0",
    ]  # fmt: skip
    if run.processes != 1:
        argv += ["--processes", str(run.processes)]
    argv.append(run.user_class)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "SLUICE_BENCH_RECORDS": str(records_dir),
        **run.env,
    }
    proc = group.spawn(f"locust-{run.label}", argv, env=env, cwd=REPO)
    if not wait:
        return proc.popen
    wait_locust(group, proc.popen, run)
    return proc.popen


def wait_locust(group: ProcGroup, popen: subprocess.Popen[bytes], run: LocustRun) -> None:
    deadline = time.monotonic() + run.run_time_s + SLACK_S
    try:
        rc = popen.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise LoadgenError(f"locust {run.label} did not finish in time") from None
    finally:
        for p in list(group.procs):
            if p.popen is popen:
                log = p.log_tail(3)
                group.stop(p)
                break
        else:
            log = ""
    if rc != 0:
        raise LoadgenError(f"locust {run.label} exited {rc}: {log}")


def locust_records(out: Path, label: str) -> list[Record]:
    return read_records(sorted((out / f"records-{label}").glob("requests-*.csv")))
