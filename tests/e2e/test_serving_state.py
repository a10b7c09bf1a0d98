"""State across restarts: ``sluice up PATH`` applies PATH only to a fresh state (or with
``--reapply``), ``sluice reset`` clears it but never under a running ``sluice up``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_serving_support import EXAMPLES, ROOT, SLUICE, Sluice


def reset(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLUICE, "reset", "--state-dir", str(state)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)  # fmt: skip


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_restart_keeps_changes_and_reset_starts_afresh(tmp_path: Path) -> None:
    hello = EXAMPLES / "hello.yaml"
    s = Sluice(tmp_path / "state")
    s.start(hello)
    try:
        s.wait_ready("hello", "hello-v1")
        s.cli("delete", "ksvc", "hello")
    finally:
        assert s.stop() == 0

    s.start(hello)  # not fresh: the deletion stands
    try:
        assert s.cli("get", "ksvc").stderr == "No resources found in default namespace.\n"
        busy = reset(s.state_dir)
        assert busy.returncode == 1
        assert busy.stderr.startswith(f"error: state directory {s.state_dir} is in use by sluice")
        second = subprocess.run([*SLUICE, "up", "--state-dir", str(s.state_dir), "--port", "0",
                                 "--api", "127.0.0.1:0"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30)  # fmt: skip
        assert second.returncode == 1 and "is in use by sluice" in second.stderr
    finally:
        assert s.stop() == 0
    log = (s.state_dir.parent / f"up-{s.port}.log").read_text()
    assert "not applied again (--reapply applies it" in log

    s.start(hello, extra=["--reapply"])
    try:
        assert "hello" in s.cli("get", "ksvc").stdout
    finally:
        assert s.stop() == 0

    cleared = reset(s.state_dir)
    assert (cleared.returncode, cleared.stdout) == (0, f"state in {s.state_dir} cleared\n")
    assert not (s.state_dir / "state.json").exists() and not (s.state_dir / "logs").exists()
    assert reset(s.state_dir).stdout == f"state in {s.state_dir} already empty\n"
