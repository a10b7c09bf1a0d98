"""Beyond Knative through ``sluice up``: a cold start's Server-Timing, sticky canaries, header
rules, and the cold starts in ``sluice describe`` and ``sluice top``."""

from __future__ import annotations

import http.client
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_serving_support import EXAMPLES, FAST_AUTOSCALER, sluice_up, wait_for

INFO = EXAMPLES / "apps" / "info.py"
ZERO = [*FAST_AUTOSCALER, "allow-zero-initial-scale=true", "initial-scale=0"]

COLD = f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: cold
spec:
  template:
    metadata:
      annotations:
        sluice.dev/server-timing: "true"
    spec:
      containers:
        - image: ghcr.io/example/info:v1
          command: [python3, {INFO}]
"""

CANARY = f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  annotations:
    sluice.dev/sticky: cookie
    sluice.dev/sticky-ttl-seconds: "300"
    sluice.dev/header-routes: |
      - header: X-Beta
        value: "yes"
        tag: beta
spec:
  template:
    metadata:
      name: hello-@V@
    spec:
      containers:
        - image: ghcr.io/example/info:@V@
          command: [python3, {INFO}]
          env:
            - name: VERSION
              value: @V@
  traffic:
TRAFFIC
"""


def canary(version: str, traffic: str, rules: bool = True) -> str:
    """The manifest; without ``rules`` no header rule (its tag would not exist yet: a rule
    naming a missing tag leaves the route unresolved, as a bad traffic target does)."""
    text = CANARY.replace("@V@", version).replace("TRAFFIC", traffic)
    if not rules:
        text = text.split("    sluice.dev/header-routes")[0] + "spec:" + text.split("spec:", 1)[1]
    return text


def curl_head(port: int, host: str) -> tuple[dict[str, str], float]:
    """``curl -sI`` as a user types it: the headers and curl's own time to first byte."""
    res = subprocess.run(
        ["curl", "-sI", "--max-time", "30", "-H", f"Host: {host}",
         "-w", "%{time_starttransfer}", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=40, check=True,
    )  # fmt: skip
    *lines, ttfb = res.stdout.splitlines()
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, float(ttfb)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_cold_revision_answers_curl_with_its_breakdown(tmp_path: Path) -> None:
    manifest = tmp_path / "cold.yaml"
    manifest.write_text(COLD)
    with sluice_up(tmp_path, manifest, autoscaler=ZERO) as s:
        s.wait_ready("cold", "cold-00001")
        assert s.revisions()["cold-00001"]["actual"] == 0
        headers, ttfb = curl_head(s.port, "cold.default.localhost")
        phases = {}
        for part in headers["server-timing"].split(","):
            name, dur = part.strip().split(";dur=")
            phases[name] = float(dur) / 1000
        assert list(phases) == ["scale", "pod-start", "ready-probe", "held", "first-byte"]
        assert phases["ready-probe"] > 0  # a Python app takes a while to listen
        assert sum(phases.values()) == pytest.approx(ttfb, rel=0.1), (phases, ttfb)
        # Warm: nothing waited, nothing to tell.
        assert "server-timing" not in curl_head(s.port, "cold.default.localhost")[0]

        described = s.cli("describe", "ksvc", "cold").stdout
        assert "Cold starts (ms):" in described
        assert "cold-00001: 1 kept" in described
        assert "READY-PROBE" in described
        top = s.cli("top", "--once").stdout
        assert "COLD STARTS" in top
        row = next(line for line in top.splitlines() if "default/cold-00001" in line)
        assert row.split()[-2] == "1", top  # one cold start, then its p50/p95


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_sticky_canary_and_header_rules(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.yaml"
    v1.write_text(canary("v1", "    - latestRevision: true\n      percent: 100", rules=False))
    with sluice_up(tmp_path, v1) as s:
        s.wait_ready("hello", "hello-v1")
        split = tmp_path / "v2.yaml"
        split.write_text(
            canary(
                "v2",
                "    - revisionName: hello-v1\n      percent: 90\n"
                "    - revisionName: hello-v2\n      percent: 10\n      tag: beta",
            )
        )
        s.cli("apply", "-f", str(split))
        wait_for(lambda: s.route("hello") == [("hello-v1", 90, ""), ("hello-v2", 10, "beta")],
                 30, "the sticky 90/10 split")  # fmt: skip
        first: Counter[str] = Counter()
        for _ in range(200):
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Host": "hello.default.localhost"})
                resp = conn.getresponse()
                version = resp.read().decode()
                cookie = resp.getheader("Set-Cookie") or ""
                assert resp.status == 200 and cookie.startswith("sluice-hello=hello-v"), cookie
                pinned = cookie.split(";")[0]
                first[pinned] += 1
                for _ in range(5):
                    conn.request("GET", "/", headers={"Host": "hello.default.localhost",
                                                      "Cookie": pinned})  # fmt: skip
                    again = conn.getresponse()
                    assert again.read().decode() == version
                    assert again.getheader("Set-Cookie") is None
            finally:
                conn.close()
        assert 160 <= first["sluice-hello=hello-v1"] <= 196, first

        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        try:
            for _ in range(10):
                conn.request("GET", "/", headers={"Host": "hello.default.localhost",
                                                  "X-Beta": "yes"})  # fmt: skip
                assert '"version": "v2"' in conn.getresponse().read().decode()
        finally:
            conn.close()

        bad = tmp_path / "bad.yaml"
        bad.write_text(
            split.read_text().replace("sluice.dev/sticky: cookie", "sluice.dev/sticky: always")
        )
        res = s.cli("apply", "-f", str(bad), check=False)
        assert res.returncode == 1
        assert "metadata.annotations[sluice.dev/sticky]" in res.stderr, res.stderr
