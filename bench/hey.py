"""hey at a fixed rate with an exact request count, one CSV row per request (``-o csv``).

``hey -n N -c C -q Q``: C workers, each at most Q requests/s, N requests in all, so the
offered rate is ``C * Q`` as long as a request takes less than ``1/Q`` seconds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping

from bench.hotpath.loadgen import TOOL_SLACK_S, LoadgenError
from bench.hotpath.procs import ProcGroup
from bench.records import Record, parse_hey_csv


def hey_argv(
    url: str, requests: int, workers: int, per_worker_qps: float, headers: Mapping[str, str]
) -> list[str]:
    argv = ["hey", "-n", str(requests), "-c", str(workers), "-q", f"{per_worker_qps:g}"]
    argv += ["-t", "30", "-o", "csv"]
    for k, v in headers.items():
        argv += ["-host", v] if k.lower() == "host" else ["-H", f"{k}: {v}"]
    return [*argv, url]


def start_hey(
    group: ProcGroup,
    name: str,
    url: str,
    requests: int,
    workers: int,
    per_worker_qps: float,
    headers: Mapping[str, str],
) -> tuple[subprocess.Popen[bytes], float]:
    """Start hey in the group; ``(popen, started_at)``; read it with ``finish_hey``."""
    started = time.time()
    proc = group.spawn(name, hey_argv(url, requests, workers, per_worker_qps, headers))
    return proc.popen, started


def finish_hey(
    group: ProcGroup,
    name: str,
    popen: subprocess.Popen[bytes],
    started: float,
    expected_s: float,
) -> list[Record]:
    """Wait for hey (bounded), stop it, and parse its CSV into records named ``name``."""
    proc = next(p for p in group.procs if p.popen is popen)
    try:
        rc = popen.wait(timeout=expected_s + TOOL_SLACK_S)
    except subprocess.TimeoutExpired:
        raise LoadgenError(f"hey {name} did not finish in time") from None
    finally:
        group.stop(proc)
    text = proc.log_path.read_text(errors="replace")
    if rc != 0:
        raise LoadgenError(f"hey {name} exited {rc}: {text[-300:]}")
    return parse_hey_csv(text, started, name)
