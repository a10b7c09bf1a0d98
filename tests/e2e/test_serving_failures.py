"""Knative's failure reasons through a real ``sluice up``: a revision that never becomes ready
fails with ProgressDeadlineExceeded and the last probe error, a crash shows its exit code and
last log line, a missing executable is named; none of them holds the others up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_serving_support import sluice_up, wait_for

SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        serving.knative.dev/progress-deadline: 3s
    spec:
      containers:
        - image: ghcr.io/example/{name}:v1
          command: {command}
"""
SERVICES = {
    "deaf": '[python3, -c, "import time; time.sleep(600)"]',
    "crashy": "[python3, -c, \"print('boom: no config', flush=True); raise SystemExit(3)\"]",
    "missing": "[./no-such-server, --port, $(PORT)]",
}


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_failed_revisions_say_why_in_knatives_words(tmp_path: Path) -> None:
    manifest = tmp_path / "failing.yaml"
    manifest.write_text(
        "---\n".join(SERVICE.format(name=n, command=c) for n, c in SERVICES.items())
    )
    with sluice_up(tmp_path, manifest) as s:

        def failed() -> dict[str, Any]:
            rows = s.revisions()
            return {
                n: rows[f"{n}-00001"] for n in SERVICES if rows[f"{n}-00001"]["ready"] == "False"
            }

        wait_for(lambda: len(failed()) == 3, 30, "all three revisions to fail")
        rows = failed()
        assert rows["deaf"]["condition"] == "ProgressDeadlineExceeded"
        assert "last probe error: dial tcp 127.0.0.1:" in rows["deaf"]["reason"]
        assert "connection refused" in rows["deaf"]["reason"]
        assert (rows["crashy"]["condition"], rows["crashy"]["reason"]) == (
            "ExitCode3", "boom: no config")  # fmt: skip
        assert rows["missing"]["condition"] == "StartError"
        assert rows["missing"]["reason"] == (
            f'executable file "./no-such-server" not found (relative to {tmp_path})'
        )

        table = s.cli("get", "ksvc").stdout
        assert "RevisionFailed" in table
        waited = s.cli("apply", "-f", str(manifest), "--wait", check=False)
        assert waited.returncode == 1
        assert waited.stderr.startswith(
            'error: service default/deaf: RevisionFailed: Revision "deaf-00001" failed with '
            "message: ProgressDeadlineExceeded: "
        )
        revs = s.cli("get", "revisions", "crashy-00001", "-o", "yaml").stdout
        assert "reason: ExitCode3" in revs
