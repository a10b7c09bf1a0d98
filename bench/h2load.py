"""``python -m bench.h2load``: HTTP/2 (h2c) through Sluice's queue-proxy and Knative's Go one.

Issue 13's performance check, all on 127.0.0.1:

1. The backend is ``nghttpd --no-tls`` (Debian ``nghttp2-server``): one worker serving
   ``index.html`` (``hello world\\n``, 12 bytes) from a temporary docroot to HTTP/2 clients
   with prior knowledge. It speaks nothing else, so every proxied request is h2c on both
   sides: both sidecars answer h2c on their serving port and mirror the client's protocol
   upstream.
2. Targets, started as ``bench.hotpath`` starts them (``bench.hotpath.targets.start_target``:
   the same environment, readiness probe, pinning and Go binary): ``direct`` (h2load to
   nghttpd, for context; its CPU is the backend's), ``queue-proxy-cc0`` / ``-cc10`` (Sluice,
   ``python -m queueproxy``) and ``go-queue-proxy-cc0`` (Knative v1.23.0's sidecar, the
   conformance test peer ``tests/kube/peers/bin/queue``; ``go-queue-proxy-cc10`` on request,
   one Go target per network namespace because it binds ports 8022 and 9090). A target that
   cannot run here (no binary, ports taken, not ready) is skipped with the reason.
3. A 1 s warm-up per target, then ``--runs`` rounds at saturation (``h2load -c 4 -m 8``:
   32 streams in flight, which keeps a one-core proxy busy while h2load and nghttpd share
   the other core, and fits a CC 10 breaker's queue) and ``--runs`` rounds at a fixed rate
   (``h2load -c 10 --rps 50``, 500 req/s, under every proxy's saturation on one core;
   h2load's clients keep step, so the requests arrive as bursts of 10 every 20 ms and the
   p99 includes queueing behind a burst, which grows with the CPU each request costs); each
   round measures every target once, so drifting background load falls on all of them alike.
   CPU per request is the target's process-tree utime+stime delta over a run divided by the
   requests h2load saw succeed.
   Latency percentiles come from h2load's ``--log-file`` (one line per request). Figures are
   the medians of the rounds; ``queue-proxy-ccN`` is divided by ``go-queue-proxy-ccN`` (CPU)
   and its p99 at the fixed rate is also shown less ``direct``'s (the latency it adds).

Pinning as in ``bench.hotpath`` (``plan_cpus``): the target alone on CPU 1, h2load and nghttpd
on CPU 0. Results: ``<out>/h2load.json`` and ``<out>/h2load.md`` (also printed). ``--quick``
(one round of 2 s) is the smoke test's run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench.hotpath.__main__ import CpuPlan, plan_cpus
from bench.hotpath.backends import HELLO, Backend
from bench.hotpath.loadgen import TOOL_SLACK_S, LoadgenError, LoadResult, tool_version
from bench.hotpath.procs import (
    ProcGroup,
    free_port,
    have,
    in_netns,
    pinned,
    rerun_in_netns,
    tree_cpu_seconds,
    wait_until,
)
from bench.hotpath.report import Point, Run, TargetResult, ratio, summarise
from bench.hotpath.targets import Running, Skip, start_target

REPO = Path(__file__).resolve().parents[1]
TARGETS = (
    "direct",
    "queue-proxy-cc0",
    "queue-proxy-cc10",
    "go-queue-proxy-cc0",
    "go-queue-proxy-cc10",
)
#: One Go sidecar per network namespace (fixed ports); CC 0 is Knative's default.
DEFAULT_TARGETS = TARGETS[:-1]
SATURATION, FIXED_RATE = "saturation", "fixed_rate"
WARMUP_S = 1.0
#: h2load at saturation: clients x streams each. 32 in flight keeps a one-core proxy busy and
#: stays within a CC 10 breaker's capacity (10 + a queue of 10 x 10, as Knative sizes it),
#: so no request is refused with a 503 at either containerConcurrency.
SAT_CLIENTS, SAT_STREAMS = 4, 8
#: h2load at the fixed rate: clients x requests per second each.
RATE_CLIENTS, RATE_PER_CLIENT = 10, 50
READY_TIMEOUT_S = 10.0
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def progress(message: str) -> None:
    print(f"[h2load] {message}", file=sys.stderr, flush=True)


# --- h2load output: pure parsers ------------------------------------------------------------

_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_h2load(stdout: str) -> LoadResult:
    """Requests that succeeded with a 2xx, wall time and rate from h2load's summary text."""
    fin, req, st = _FINISHED.search(stdout), _REQUESTS.search(stdout), _STATUS.search(stdout)
    if fin is None or req is None or st is None:
        raise LoadgenError(f"h2load: no summary in output: {stdout[-300:]!r}")
    duration = float(fin.group(1)) * _UNIT_S[fin.group(2)]
    ok_2xx = int(st.group(1))
    refused = int(st.group(3)) + int(st.group(4))
    # h2load's "failed" holds both answers with a 4xx/5xx status and requests that got none
    # (reset streams, closed connections, timeouts: its "errored" and "timeout" are subsets).
    return LoadResult(
        requests=ok_2xx,
        duration_s=duration,
        rps=ok_2xx / duration if duration else 0.0,
        errors=max(0, int(req.group(5)) - refused),
        non_2xx=refused + int(st.group(2)),
    )


def latency_percentiles(log_text: str) -> dict[str, float]:
    """p50/p90/p99/max in ms of the 2xx rows of an h2load ``--log-file`` (nearest rank)."""
    us = sorted(
        int(cols[2])
        for line in log_text.splitlines()
        if len(cols := line.split("\t")) >= 3 and cols[1].startswith("2")
    )
    if not us:
        return {}
    out = {f"p{p}": us[max(0, math.ceil(p / 100 * len(us)) - 1)] / 1e3 for p in (50, 90, 99)}
    out["max"] = us[-1] / 1e3
    return out


# --- processes -----------------------------------------------------------------------------


def run_h2load(
    url: str,
    *,
    duration_s: float,
    cpu: int | None,
    log_path: Path,
    streams: int = 1,
    clients: int,
    rps_per_client: int | None = None,
) -> LoadResult:
    """One timed h2load run (prior-knowledge h2c); latencies from its per-request log."""
    argv = ["h2load", "-D", f"{duration_s:g}", "-c", str(clients), "-m", str(streams)]
    log_path.unlink(missing_ok=True)  # h2load appends to an existing log
    argv += ["--log-file", str(log_path)]
    if rps_per_client is not None:
        argv += ["--rps", str(rps_per_client)]
    try:
        done = subprocess.run(
            pinned([*argv, url], cpu),
            capture_output=True,
            text=True,
            timeout=duration_s + TOOL_SLACK_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadgenError(f"h2load did not finish within {duration_s + TOOL_SLACK_S:g} s") from exc
    if done.returncode != 0:
        raise LoadgenError(f"h2load exited {done.returncode}: {done.stderr.strip()[-300:]}")
    result = parse_h2load(done.stdout)
    return replace(result, latency_ms=latency_percentiles(log_path.read_text()))


def h2c_answers(port: int) -> bool:
    """Whether 127.0.0.1:``port`` answers the HTTP/2 preface with a SETTINGS frame."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(_PREFACE)
            head = sock.recv(9)
    except OSError:
        return False
    return len(head) == 9 and head[3] == 0x4


def start_nghttpd(group: ProcGroup, cpu: int | None) -> Backend:
    """nghttpd on a free port serving ``HELLO`` at ``/``; waits until it speaks h2c."""
    docroot = group.log_dir / "docroot"
    docroot.mkdir(exist_ok=True)
    (docroot / "index.html").write_text(HELLO)
    port = free_port()
    argv = ["nghttpd", "--no-tls", "-d", str(docroot), "--address=127.0.0.1", str(port)]
    proc = group.spawn("backend-nghttpd", argv, cpu=cpu)
    if wait_until(proc, lambda: h2c_answers(port), READY_TIMEOUT_S) is None:
        raise RuntimeError(f"nghttpd did not become ready: {proc.log_tail()}")
    return Backend("nghttpd", port, proc)


# --- rounds --------------------------------------------------------------------------------


def measure(target: Running, load: Callable[[], LoadResult]) -> Run:
    """One load run; the target's CPU (its whole process tree) per successful request."""
    c0 = tree_cpu_seconds(target.pid)
    res = load()
    c1 = tree_cpu_seconds(target.pid)
    if target.proc is not None and not target.proc.alive():
        raise LoadgenError(f"{target.name} exited during the run: {target.proc.log_tail(3)}")
    if res.requests == 0:
        raise LoadgenError(f"{target.name}: no successful requests ({res.errors} errors)")
    return Run(
        rps=res.rps,
        requests=res.requests,
        duration_s=res.duration_s,
        cpu_us_per_req=(c1 - c0) * 1e6 / res.requests,
        latency_ms=dict(res.latency_ms),
        errors=res.errors,
        non_2xx=res.non_2xx,
    )


def measure_targets(
    targets: Sequence[Running], plan: CpuPlan, runs: int, duration: float, logs: Path
) -> dict[str, dict[str, Point] | LoadgenError]:
    """Warm-up, then rounds at saturation, then rounds at the fixed rate; each round visits
    every target once. A target whose run fails is dropped from later rounds."""
    failed: dict[str, LoadgenError] = {}
    got: dict[str, dict[str, list[Run]]] = {
        t.name: {SATURATION: [], FIXED_RATE: []} for t in targets
    }

    def sat(t: Running, seconds: float) -> LoadResult:
        return run_h2load(
            t.url, duration_s=seconds, cpu=plan.load, log_path=logs / f"{t.name}-sat.tsv",
            clients=SAT_CLIENTS, streams=SAT_STREAMS,
        )  # fmt: skip

    def rate(t: Running) -> LoadResult:
        return run_h2load(
            t.url, duration_s=duration, cpu=plan.load, log_path=logs / f"{t.name}-rate.tsv",
            clients=RATE_CLIENTS, rps_per_client=RATE_PER_CLIENT,
        )  # fmt: skip

    def each(what: str, body: Callable[[Running], None]) -> None:
        for t in targets:
            if t.name in failed:
                continue
            progress(f"{t.name}: {what}")
            try:
                body(t)
            except LoadgenError as exc:
                progress(f"{t.name}: failed: {exc}")
                failed[t.name] = exc

    def warm(t: Running) -> None:
        sat(t, WARMUP_S)

    each(f"warm-up {WARMUP_S:g} s", warm)
    for i in range(runs):
        each(
            f"saturation round {i + 1}/{runs} (-c{SAT_CLIENTS} -m{SAT_STREAMS}, {duration:g} s)",
            lambda t: got[t.name][SATURATION].append(measure(t, lambda: sat(t, duration))),
        )
    for i in range(runs):
        each(
            f"fixed-rate round {i + 1}/{runs} (-c{RATE_CLIENTS} --rps {RATE_PER_CLIENT})",
            lambda t: got[t.name][FIXED_RATE].append(measure(t, lambda: rate(t))),
        )
    out: dict[str, dict[str, Point] | LoadgenError] = dict(failed)
    for t in targets:
        if t.name not in failed:
            out[t.name] = {key: summarise(rs) for key, rs in got[t.name].items()}
    return out


# --- report --------------------------------------------------------------------------------


def with_go_ratios(results: Sequence[TargetResult]) -> list[TargetResult]:
    """``ratio_to_go`` on ``queue-proxy-ccN``'s points: its CPU over ``go-queue-proxy-ccN``'s."""
    ok = {r.name: r for r in results if r.status == "ok"}
    out = []
    for res in results:
        twin = ok.get("go-" + res.name) if res.name.startswith("queue-proxy-cc") else None
        if twin is None or res.status != "ok":
            out.append(res)
            continue
        points = {}
        for key, pt in res.points.items():
            go = twin.points.get(key)
            points[key] = replace(
                pt,
                ratio_to_go=ratio(pt.cpu_us_per_req, go.cpu_us_per_req if go else None),
                best_ratio_to_go=ratio(
                    pt.best_cpu_us_per_req, go.best_cpu_us_per_req if go else None
                ),
            )
        out.append(replace(res, points=points))
    return out


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_markdown(results: Sequence[TargetResult], env: Mapping[str, Any]) -> str:
    """One table: saturation CPU, req/s and ratio to Go; p99 and added p99 at the fixed rate."""
    ok = [r for r in results if r.status == "ok"]
    direct = next((r for r in ok if r.name == "direct"), None)
    base_p99 = direct.points[FIXED_RATE].latency_ms.get("p99") if direct else None
    lines = [
        "# HTTP/2 (h2c) through the queue-proxies: h2load",
        "",
        f"{env['cpu_count']} CPUs; pinning: {env['pinning']}; backend: nghttpd; "
        f"{env['runs']} rounds x {env['duration_s']:g} s, medians. Saturation: h2load "
        f"-c{SAT_CLIENTS} -m{SAT_STREAMS}; fixed rate: -c{RATE_CLIENTS} --rps "
        f"{RATE_PER_CLIENT} ({RATE_CLIENTS * RATE_PER_CLIENT} req/s). Commit "
        f"{env.get('commit', '?')}, {env.get('started_at', '?')}.",
        "",
        "| target | sat. req/s | sat. µs CPU/req | \u00d7 Go | best round \u00d7 Go | sat. p99 ms "
        "| rate µs CPU/req | \u00d7 Go | rate p99 ms | added p99 ms | idle RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok:
        sat, fix = r.points[SATURATION], r.points[FIXED_RATE]
        p99 = fix.latency_ms.get("p99")
        added = None if r is direct or p99 is None or base_p99 is None else p99 - base_p99
        cpu = _f(sat.cpu_us_per_req, ".1f") + (" (backend)" if r.cpu_of == "backend" else "")
        rss = None if r.idle_rss_kib is None else r.idle_rss_kib / 1024
        lines.append(
            f"| {r.name} | {sat.rps:,.0f} | {cpu} | {_f(sat.ratio_to_go, '.2f')} "
            f"| {_f(sat.best_ratio_to_go, '.2f')} | {_f(sat.latency_ms.get('p99'), '.2f')} "
            f"| {_f(fix.cpu_us_per_req, '.1f')} | {_f(fix.ratio_to_go, '.2f')} "
            f"| {_f(p99, '.2f')} | {_f(added, '.2f')} | {_f(rss, '.1f')} |"
        )
    errors = {r.name: sum(run.errors + run.non_2xx for p in r.points.values() for run in p.runs)
              for r in ok}  # fmt: skip
    bad = {k: v for k, v in errors.items() if v}
    if bad:
        lines += [
            "",
            "Failed or non-2xx requests: " + ", ".join(f"{k} {v}" for k, v in bad.items()),
        ]
    for r in results:
        if r.status != "ok":
            lines += ["", f"{r.name}: {r.status}: {r.note}"]
    return "\n".join(lines) + "\n"


def environment(plan: CpuPlan, runs: int, duration: float) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "pinning": plan.description.replace("wrk/hey", "h2load"),
        "runs": runs,
        "duration_s": duration,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "tools": {
            "h2load": tool_version(["h2load", "--version"]),
            "nghttpd": tool_version(["nghttpd", "--version"]),
            "python": platform.python_version(),
        },
        "commit": tool_version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_at_start": os.getloadavg(),
    }


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.h2load", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="rounds per load point (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma list from: {', '.join(TARGETS)} (default all but go-queue-proxy-cc10)",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        help="run in a private network namespace (as root): Go's sidecar binds fixed ports",
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s (smoke test)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 2.0
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.runs < 1 or not 0 < args.duration <= 600:
        parser.error("--runs must be >= 1 and --duration in (0, 600]")
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind through every finally, which stops our processes


def run(args: argparse.Namespace) -> list[TargetResult]:
    """Start the backend and the targets, measure, stop everything; one result per target."""
    plan = plan_cpus(os.cpu_count() or 1, have("taskset"))
    with (
        tempfile.TemporaryDirectory(prefix="sluice-h2load-") as tmp,
        ProcGroup(Path(tmp)) as group,
    ):
        progress(f"starting nghttpd; pinning: {plan.description}")
        backend = start_nghttpd(group, plan.backend)
        started: list[Running] = []
        results: dict[str, TargetResult] = {}
        for name in args.targets:
            progress(f"{name}: starting")
            try:
                started.append(start_target(name, group, backend, plan.proxy, REPO))
            except Skip as skip:
                progress(f"{name}: skipped: {skip}")
                results[name] = TargetResult(name, "skipped", note=str(skip))
        measured = measure_targets(started, plan, args.runs, args.duration, Path(tmp))
    for t in started:
        outcome = measured[t.name]
        if isinstance(outcome, LoadgenError):
            results[t.name] = TargetResult(t.name, "failed", note=str(outcome))
        else:
            results[t.name] = TargetResult(
                t.name, "ok", cpu_of=t.cpu_of, startup_s=t.startup_s,
                idle_rss_kib=t.idle_rss_kib, points=outcome,
            )  # fmt: skip
    return with_go_ratios([results[n] for n in args.targets])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.netns and not in_netns():
        return rerun_in_netns("bench.h2load", sys.argv[1:] if argv is None else argv, REPO)
    for tool in ("h2load", "nghttpd"):
        if not have(tool):
            print(f"bench.h2load: {tool} is not installed (Debian nghttp2)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    plan = plan_cpus(os.cpu_count() or 1, have("taskset"))
    env = environment(plan, args.runs, args.duration)
    results = run(args)
    env["loadavg_at_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"environment": env, "targets": {r.name: asdict(r) for r in results}}
    (args.out / "h2load.json").write_text(json.dumps(doc, indent=2) + "\n")
    markdown = render_markdown(results, env)
    (args.out / "h2load.md").write_text(markdown)
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench.h2load: interrupted; all started processes were stopped", file=sys.stderr)
        sys.exit(130)
