"""Every ``python -m bench`` scenario, seconds-long (``--quick``), end to end on loopback.

Checks the files, not the figures: ``summary.json`` parses with the expected keys, the
per-request and pod CSVs and locust's reports exist, the PNG plots are non-empty. A scenario
whose external tool (siege, hey, locust) is missing is skipped with the reason.
About 80 s in all on a 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import missing_tools
from bench.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "scenario", "description", "command", "started_at", "wall_s", "duration_s", "quick",
    "machine", "scaled", "results", "checks", "passed", "files",
}  # fmt: skip
#: Files each scenario must leave besides summary.json (globs, each must match a file).
EXPECTED = {
    "hotpath": ["latency.png", "requests-activator.csv", "locust-activator.html",
                "locust-queue-proxy_stats.csv", "requests-direct.csv"],
    "split": ["shares.png", "latency.png", "pods.png", "pods.csv", "requests-split.csv",
              "locust-split_stats.csv", "locust-split.html"],
    "coldstart": ["coldstart.png", "pods.png", "pods.csv", "requests-coldstart.csv",
                  "locust-coldstart.html"],
    "overload": ["latency.png", "requests-overload.csv", "locust-overload_stats.csv"],
    "rollout": ["shares.png", "latency.png", "pods.png", "requests-rollout.csv",
                "locust-rollout.html"],
    "dataplane-probe": ["latency.png", "added-latency.png", "requests-direct.csv",
                        "requests-queue-proxy.csv", "requests-activator+queue-proxy.csv"],
    "load-test": ["latency.png", "pods.png", "pods.csv", "requests-load-test.csv",
                  "locust-load-test.html"],
    "rollout-probe": ["latency.png", "pods.png", "requests-rollout-probe.csv"],
    "siege": ["pods.png", "pods.csv", "siege.txt"],
}  # fmt: skip
#: Per scenario: the run itself (~5-18 s) plus start-up and stop, with room for a busy machine.
TIMEOUT_S = 75


def test_every_scenario_has_a_smoke_test() -> None:
    assert set(EXPECTED) == set(SCENARIOS)


@pytest.mark.e2e
@pytest.mark.timeout(TIMEOUT_S + 10)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_quick_run_writes_its_files(name: str, tmp_path: Path) -> None:
    missing = missing_tools(SCENARIOS[name])
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS, SUMMARY_KEYS - set(summary)
    assert summary["scenario"] == name and summary["quick"] is True
    assert summary["results"] and summary["checks"]
    for listed in summary["files"]:
        assert (out / listed).is_file(), listed
    for want in EXPECTED[name]:
        path = out / want
        assert path.is_file(), f"{want} missing; have {sorted(p.name for p in out.iterdir())}"
        assert path.stat().st_size > 0, want
        if want.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", want
        if want.endswith(".csv") and want.startswith("requests-"):
            assert len(path.read_text().splitlines()) >= 2, f"{want} has no request"
