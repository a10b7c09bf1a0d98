"""``python -m bench SCENARIO... [--duration S] [--users N] [--quick] [--processes N]``.

Runs each scenario on loopback with everything it needs started (``sluice up`` with a fresh
state directory and free ports, or a queue-proxy alone in front of ``examples/apps/info.py``)
and stopped afterwards, also on Ctrl-C or SIGTERM; writes ``bench/results/<scenario>/``:
``summary.json``, per-request CSVs, locust's CSV and HTML reports, and PNG plots. A progress
line shows on stderr. ``all`` runs every scenario in turn; ``--list`` names them.

Exit codes: 0 every scenario ran; 1 a scenario failed to run; 2 usage or a missing tool;
4 with ``--strict`` when a scenario's checks (zero failures, rate within 1 %, ...) failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.hotpath.loadgen import LoadgenError
from bench.hotpath.procs import ProcGroup, have
from bench.locustrun import have_locust
from bench.monitor import Progress
from bench.plots import have_matplotlib
from bench.scenarios import SCENARIOS, Scenario
from bench.scenarios.common import Context
from bench.stack import REPO, StackError

MACHINE_NOTE = (
    "one shared, noisy machine: the load generator, sluice up, the pods and the app all run "
    "on the same CPUs over loopback; figures are for comparison within a run, not capacity"
)
_STALE = ("*.csv", "*.png", "*.html", "summary.json", "siege.txt", "siegerc")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind through every finally, which stops our processes


def missing_tools(scenario: Scenario) -> list[str]:
    missing = [t for t in scenario.tools if not have(t)]
    if scenario.locust and not have_locust():
        missing.append("locust (pip install 'locust>=2.20')")
    if not have_matplotlib():
        missing.append("matplotlib (pip install 'matplotlib>=3.8')")
    return missing


def _clean(out: Path) -> None:
    """Remove the files an earlier run of this scenario left (records are appended to)."""
    out.mkdir(parents=True, exist_ok=True)
    for pattern in _STALE:
        for p in out.glob(pattern):
            p.unlink()
    for d in out.glob("records-*"):
        if d.is_dir():
            shutil.rmtree(d)


def run_scenario(scenario: Scenario, args: argparse.Namespace, argv: Sequence[str]) -> bool:
    """Run one scenario and write its summary; whether every check passed."""
    out: Path = args.out / scenario.name
    _clean(out)
    duration = args.duration or (scenario.quick_s if args.quick else scenario.default_s)
    progress = Progress(scenario.name).start()
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    load0 = os.getloadavg()
    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"sluice-bench-{scenario.name}-") as tmp,
            ProcGroup(Path(tmp)) as group,
        ):
            ctx = Context(scenario.name, out, duration, args.users, args.quick, args.processes,
                          group, progress)  # fmt: skip
            outcome = scenario.run(ctx)
            progress.set("stopping everything started")
    finally:
        progress.stop()
    checks: dict[str, bool] = outcome.get("checks", {})
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "command": "python -m bench " + " ".join(argv),
        "started_at": started,
        "wall_s": round(time.monotonic() - wall0, 1),
        "duration_s": duration,
        "quick": args.quick,
        "users": args.users,
        "processes": args.processes,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "note": MACHINE_NOTE,
        },
        "scaled": outcome.get("scaled", ""),
        "results": outcome.get("results", {}),
        "checks": checks,
        "passed": all(checks.values()),
        "files": sorted(set(ctx.files)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    verdict = "ok" if summary["passed"] else "CHECKS FAILED"
    failed = [k for k, v in checks.items() if not v]
    print(f"{scenario.name}: {verdict}{' (' + ', '.join(failed) + ')' if failed else ''}; "
          f"{_rel(out / 'summary.json')}")  # fmt: skip
    return bool(summary["passed"])


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = list(SCENARIOS)
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"one or more of: {', '.join(names)}, or all")  # fmt: skip
    p.add_argument("--duration", type=float, help="seconds of load (default per scenario)")
    p.add_argument("--users", type=int, help="users / clients (default per scenario)")
    p.add_argument("--quick", action="store_true", help="a few seconds each (the CI smoke)")
    p.add_argument("--processes", type=int, default=1,
                   help="locust --processes (-1: one per core; default 1)")  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--strict", action="store_true", help="exit 4 when a check fails")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = p.parse_args(argv)
    if args.list:
        return args
    chosen = names if args.scenarios == ["all"] else args.scenarios
    unknown = [s for s in chosen if s not in SCENARIOS]
    if not chosen or unknown:
        p.error(f"unknown or missing scenario {' '.join(unknown)}; known: {', '.join(names)}")
    if args.duration is not None and not 0 < args.duration <= 3600:
        p.error("--duration must be in (0, 3600]")
    if args.users is not None and args.users < 1:
        p.error("--users must be >= 1")
    args.scenarios = chosen
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:<16} {s.default_s:>4.0f} s  {s.description}")
        return 0
    for name in args.scenarios:
        missing = missing_tools(SCENARIOS[name])
        if missing:
            print(f"bench: {name} needs {', '.join(missing)}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    all_passed, status = True, 0
    for name in args.scenarios:
        try:
            all_passed &= run_scenario(SCENARIOS[name], args, raw)
        except (StackError, LoadgenError) as exc:
            print(f"bench: {name} failed: {exc}", file=sys.stderr)
            status = 1
    if status == 0 and args.strict and not all_passed:
        return 4
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench: interrupted; all started processes were stopped", file=sys.stderr)
        sys.exit(130)
