"""``python -m bench.h2load --quick``, end to end on loopback (about 30 s on 2 cores).

Checks that Sluice's queue-proxy targets produce figures over h2c (requests, CPU per request,
p99 at the fixed rate) and that Knative's Go sidecar is either measured or skipped with the
reason (it needs ``tests/kube/peers/bin/queue`` and free ports 8022/9090, which ``--netns``
provides; the smoke run does not ask for a network namespace).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 90
SLUICE = ("queue-proxy-cc0", "queue-proxy-cc10")


@pytest.mark.e2e
@pytest.mark.timeout(TIMEOUT_S + 10)
def test_h2load_quick_run_measures_sluice_over_h2c(tmp_path: Path) -> None:
    missing = [t for t in ("h2load", "nghttpd") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"bench.h2load needs {', '.join(missing)} (Debian nghttp2)")
    targets = ",".join(("direct", *SLUICE, "go-queue-proxy-cc0"))
    argv = [sys.executable, "-m", "bench.h2load", "--quick", "--targets", targets]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((tmp_path / "h2load.json").read_text())
    got = doc["targets"]
    for name in ("direct", *SLUICE):
        assert got[name]["status"] == "ok", got[name]["note"]
        sat, rate = got[name]["points"]["saturation"], got[name]["points"]["fixed_rate"]
        assert sat["rps"] > 0 and sat["cpu_us_per_req"] > 0, name
        assert rate["latency_ms"]["p99"] > 0, name
        assert all(run["errors"] == 0 and run["non_2xx"] == 0 for run in sat["runs"]), name
    go = got["go-queue-proxy-cc0"]
    assert go["status"] == "ok" or (go["status"] == "skipped" and go["note"]), go
    assert "| queue-proxy-cc0 |" in (tmp_path / "h2load.md").read_text()
