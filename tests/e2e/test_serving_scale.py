"""Autoscaling with real pods: scale to zero and back, and the 500-client siege."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_serving_support import (
    EXAMPLES,
    FAST_AUTOSCALER,
    run_load,
    sluice_up,
    wait_for,
)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_idle_revisions_scale_to_zero_and_the_next_request_wakes_one(tmp_path: Path) -> None:
    with sluice_up(tmp_path, EXAMPLES / "hello.yaml", EXAMPLES / "sleepy.yaml") as s:
        s.wait_ready("hello", "hello-v1")
        s.wait_ready("sleepy", "sleepy-00001")
        # hello-v2 takes all traffic: hello-v1 has none left and must go to zero.
        s.cli("apply", "-f", str(EXAMPLES / "canary" / "3-v2-100.yaml"))
        s.wait_ready("hello", "hello-v2")
        # sleepy keeps its route but gets no requests: it goes to zero as well.
        wait_for(lambda: s.revisions()["hello-v1"]["actual"] == 0, 30, "hello-v1 at zero")
        wait_for(lambda: s.revisions()["sleepy-00001"]["actual"] == 0, 30, "sleepy at zero")
        assert s.revisions()["hello-v1"]["traffic"] == 0
        assert s.revisions()["sleepy-00001"]["desired"] == 0

        started = time.monotonic()
        cold = run_load(s.port, "sleepy.default.localhost", 1, path="/?sleep=0")
        cold_start = time.monotonic() - started
        assert cold.revisions == {"sleepy-00001": 1}, cold
        assert cold_start < 10, cold_start
        assert s.revisions()["sleepy-00001"]["actual"] >= 1
        describe = s.cli("describe", "ksvc", "sleepy").stdout
        assert "Activating" in describe


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_siege_scales_to_max_scale_and_never_beyond(tmp_path: Path) -> None:
    with sluice_up(tmp_path, EXAMPLES / "siege.yaml") as s:
        s.wait_ready("siege", "siege-00001")
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                rev = s.revisions()["siege-00001"]
                peak[0] = max(peak[0], rev["actual"], rev["desired"])
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = run_load(s.port, "siege.default.localhost", 0, concurrency=500,
                              path="/?sleep=0.5", duration=10)  # fmt: skip
        finally:
            stop.set()
            watcher.join()
        assert not result.failures, result.failures
        assert result.total > 1000, result
        assert peak[0] == 3, peak
        top = s.cli("top", "--once").stdout
        assert "default/siege-00001" in top


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_zero_initial_scale_revision_is_ready_with_no_pods_and_wakes_on_request(
    tmp_path: Path,
) -> None:
    autoscaler = [*FAST_AUTOSCALER, "allow-zero-initial-scale=true", "initial-scale=0"]
    with sluice_up(tmp_path, EXAMPLES / "sleepy.yaml", autoscaler=autoscaler) as s:
        # Knative: ready pods reach the initial scale (0) at once, so the revision is Ready.
        s.wait_ready("sleepy", "sleepy-00001")
        assert s.revisions()["sleepy-00001"]["actual"] == 0
        request = urllib.request.Request(
            f"http://127.0.0.1:{s.port}/", headers={"Host": "sleepy.default.localhost"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 200
        assert s.revisions()["sleepy-00001"]["actual"] >= 1
