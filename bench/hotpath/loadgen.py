"""wrk and hey: run them pinned, and parse their text output into frozen results.

The parsers are pure functions of the tool's stdout so they can be tested on samples.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.hotpath.procs import pinned

#: Extra seconds a load generator may take beyond its nominal duration before it is killed.
TOOL_SLACK_S = 30.0

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class LoadgenError(RuntimeError):
    """A load generator failed or printed something we cannot parse."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load-generator run reports. Latencies are in milliseconds, keyed ``p50``..."""

    requests: int
    duration_s: float
    rps: float
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    errors: int = 0
    non_2xx: int = 0


def _wrk_time_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise LoadgenError(f"wrk: cannot parse time {text!r}")
    return float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]


def parse_wrk(text: str) -> LoadResult:
    """Parse ``wrk`` (4.x) stdout, with or without ``--latency``."""
    m = re.search(r"^\s*(\d+) requests in ([\d.]+(?:us|ms|s|m|h)),", text, re.M)
    rps_m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m or not rps_m:
        raise LoadgenError(f"wrk: no request count in output: {text[-300:]!r}")
    latency: dict[str, float] = {}
    dist = re.search(r"Latency Distribution\n((?:\s+[\d.]+%\s+\S+\n)+)", text)
    if dist:
        for pct, value in re.findall(r"([\d.]+)%\s+(\S+)", dist.group(1)):
            latency[f"p{float(pct):g}"] = _wrk_time_ms(value)
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors = sum(int(g) for g in sock.groups())
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return LoadResult(
        requests=int(m.group(1)),
        duration_s=_wrk_time_ms(m.group(2)) / 1e3,
        rps=float(rps_m.group(1)),
        latency_ms=latency,
        errors=errors,
        non_2xx=int(non.group(1)) if non else 0,
    )


def parse_hey(text: str) -> LoadResult:
    """Parse ``hey``'s default summary output."""
    total = re.search(r"^\s*Total:\s+([\d.]+) secs", text, re.M)
    rps = re.search(r"^\s*Requests/sec:\s+([\d.]+)", text, re.M)
    if not total or not rps:
        raise LoadgenError(f"hey: no summary in output: {text[-300:]!r}")
    latency = {
        f"p{pct}": float(secs) * 1e3
        for pct, secs in re.findall(r"^\s*(\d+)%+ in ([\d.]+) secs", text, re.M)
    }
    statuses = {
        int(code): int(n)
        for code, n in re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", text, re.M)
    }
    errors = 0
    err_block = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", text)
    if err_block:
        errors = sum(int(n) for n in re.findall(r"\[(\d+)\]", err_block.group(1)))
    ok = sum(n for code, n in statuses.items() if 200 <= code < 400)
    return LoadResult(
        requests=sum(statuses.values()),
        duration_s=float(total.group(1)),
        rps=float(rps.group(1)),
        latency_ms=latency,
        errors=errors,
        non_2xx=sum(statuses.values()) - ok,
    )


def _run(argv: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadgenError(f"{argv[0]} timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise LoadgenError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-300:]}")
    return done.stdout


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    headers: Mapping[str, str],
    cpu: int | None,
) -> LoadResult:
    """``wrk -t1 -c<connections> -d<duration> --latency`` at ``url`` (one thread: one core)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    return parse_wrk(_run(pinned(argv, cpu), duration_s + TOOL_SLACK_S))


def run_hey(
    url: str,
    *,
    duration_s: float,
    concurrency: int,
    per_worker_qps: int,
    headers: Mapping[str, str],
    cpu: int | None,
) -> LoadResult:
    """``hey -z <d>s -c <c> -q <q>``: a fixed total rate of ``c * q`` req/s."""
    argv = ["hey", "-z", f"{duration_s:g}s", "-c", str(concurrency), "-q", str(per_worker_qps)]
    for k, v in headers.items():
        if k.lower() == "host":
            argv += ["-host", v]
        else:
            argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    return parse_hey(_run(pinned(argv, cpu), duration_s + TOOL_SLACK_S))


def tool_version(argv: list[str]) -> str:
    """The first line a tool prints about its version, or ``"unknown"``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"
