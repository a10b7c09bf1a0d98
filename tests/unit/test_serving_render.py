"""CLI tables and the small pure helpers of the runtime and settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from serving import render
from serving.pods import PodPhase
from serving.runtime import scale_plan
from serving.settings import (
    api_address,
    autoscaler_from_flags,
    default_state_dir,
    queue_proxy_argv,
    split_address,
)


def test_table_aligns_columns_like_kubectl() -> None:
    text = render.table(["NAME", "READY"], [["hello", "True"], ["a", None]])
    assert text.splitlines() == ["NAME    READY", "hello   True", "a"]


def test_services_table_has_knatives_columns() -> None:
    row = {"name": "hello", "url": "http://h", "latestCreated": "hello-2", "latestReady": "hello-1",
           "ready": "Unknown", "reason": "RevisionMissing"}  # fmt: skip
    lines = render.services([row]).splitlines()
    assert lines[0].split() == ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"]
    assert lines[1].split() == ["hello", "http://h", "hello-2", "hello-1", "Unknown",
                                "RevisionMissing"]  # fmt: skip


def test_routes_table_lists_percent_and_tags() -> None:
    row = {"name": "hello", "url": "u", "ready": "True",
           "traffic": [{"revision": "a", "percent": 90, "tag": ""},
                       {"revision": "b", "percent": 10, "tag": "canary"}]}  # fmt: skip
    assert "90% -> a,10% -> b (tag canary)" in render.routes([row])


def pod(name: str, ready: bool, created: float, phase: PodPhase | None = None) -> Any:
    phase = phase or (PodPhase.READY if ready else PodPhase.STARTING)
    return SimpleNamespace(name=name, ready=ready, created_at=created, phase=phase)


def test_scale_plan_starts_the_missing_pods() -> None:
    plan = scale_plan([pod("a", True, 1)], 3)
    assert (plan.start, plan.stop) == (2, ())


def test_scale_plan_stops_unready_then_newest_and_ignores_terminating() -> None:
    pods = [pod("old", True, 1), pod("new", True, 3), pod("starting", False, 2),
            pod("going", False, 4, PodPhase.TERMINATING)]  # fmt: skip
    plan = scale_plan(cast(Any, pods), 1)
    assert [p.name for p in plan.stop] == ["starting", "new"]


def test_split_address() -> None:
    assert split_address("127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert split_address("http://[::1]:9/") == ("::1", 9)
    assert split_address("9000") == ("127.0.0.1", 9000)
    with pytest.raises(ValueError, match="want host:port"):
        split_address("localhost:http")


def test_api_address_flag_then_env_then_default() -> None:
    assert api_address("h:1", {"SLUICE_API": "e:2"}) == "h:1"
    assert api_address(None, {"SLUICE_API": "e:2"}) == "e:2"
    assert api_address(None, {}) == "127.0.0.1:8081"


def test_default_state_dir_follows_xdg() -> None:
    assert default_state_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/sluice")
    assert default_state_dir({}) == Path.home() / ".local/share/sluice"


def test_queue_proxy_command_can_be_overridden() -> None:
    assert queue_proxy_argv({"SLUICE_QUEUE_PROXY_COMMAND": "py 'my qp.py'"}) == ("py", "my qp.py")
    assert queue_proxy_argv({})[1:] == ("-m", "queueproxy")


def test_autoscaler_flags_use_config_autoscaler_keys() -> None:
    cfg = autoscaler_from_flags(["stable-window=10s", "scale-to-zero-grace-period=2s"])
    assert (cfg.stable_window, cfg.scale_to_zero_grace_period) == (10.0, 2.0)
    with pytest.raises(ValueError, match="unknown autoscaler setting"):
        autoscaler_from_flags(["nope=1"])
