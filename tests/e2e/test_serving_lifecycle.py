"""Blue/green under steady load, and a killed ``sluice up`` coming back with its state."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from tests.e2e.test_serving_support import (
    EXAMPLES,
    LoadResult,
    Sluice,
    run_load,
    sluice_up,
    wait_for,
)

WEB = "web.default.localhost"


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_blue_green_switch_and_rollback_lose_no_request(tmp_path: Path) -> None:
    with sluice_up(tmp_path, EXAMPLES / "web.yaml") as s:
        s.wait_ready("web", "web-blue")
        results: list[LoadResult] = []
        steady = threading.Thread(
            target=lambda: results.append(run_load(s.port, WEB, 0, concurrency=8, duration=14))
        )
        steady.start()
        try:
            s.cli("apply", "-f", str(EXAMPLES / "blue-green" / "1-deploy-green.yaml"))
            s.wait_ready("web", "web-green")
            green = run_load(s.port, "green-web.default.localhost", 20)
            assert green.revisions == {"web-green": 20}, green
            s.cli("apply", "-f", str(EXAMPLES / "blue-green" / "2-switch-to-green.yaml"))
            wait_for(lambda: s.route("web")[1] == ("web-green", 100, "green"), 10, "switch")
            switched = run_load(s.port, WEB, 50)
            assert switched.revisions == {"web-green": 50}, switched
            s.cli("apply", "-f", str(EXAMPLES / "blue-green" / "3-rollback-to-blue.yaml"))
            wait_for(lambda: s.route("web")[0] == ("web-blue", 100, "blue"), 10, "rollback")
            back = run_load(s.port, WEB, 50)
            assert back.revisions == {"web-blue": 50}, back
        finally:
            steady.join()
        load = results[0]
        assert not load.failures, load.failures
        assert load.revisions["web-blue"] > 0 and load.revisions["web-green"] > 0, load


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_killed_sluice_up_comes_back_with_the_same_services_and_routes(
    tmp_path: Path,
) -> None:
    s = Sluice(tmp_path / "state")
    s.start(EXAMPLES / "hello.yaml")
    try:
        s.wait_ready("hello", "hello-v1")
        s.cli("apply", "-f", str(EXAMPLES / "canary" / "1-v2-50-50.yaml"))
        wait_for(lambda: len(s.route("hello")) == 2, 20, "the 50/50 split")
        services = s.get("/api/v1/services")["items"]
        route = s.route("hello")
    finally:
        s.remember_children()
        assert s.stop(signal.SIGKILL) == -signal.SIGKILL  # pods die with it (PDEATHSIG)

    again = Sluice(s.state_dir, port=s.port)
    again.start()  # no manifests: everything comes from the state directory
    try:
        assert again.get("/api/v1/services")["items"] == services
        assert again.route("hello") == route
        result = run_load(again.port, "hello.default.localhost", 400, concurrency=16)
        assert not result.failures, result.failures
        assert set(result.revisions) == {"hello-v1", "hello-v2"}, result
    finally:
        assert again.stop() == 0
