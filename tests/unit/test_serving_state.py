"""Cluster state: all-or-nothing apply, readiness re-resolving routes, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from activator.model import TrafficTarget
from serving.manifest import ManifestError, ServiceManifest
from serving.manifest_loader import parse_service
from serving.state import (
    ClusterState,
    StateStore,
    apply_manifests,
    delete_service,
    mark_ready,
    routed_revisions,
)


def svc(
    name: str = "hello", version: str = "v1", traffic: list[dict[str, Any]] | None = None,
    rev: str = "",
) -> ServiceManifest:  # fmt: skip
    meta = {"name": rev} if rev else {}
    return parse_service(
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "metadata": meta,
                    "spec": {
                        "containers": [
                            {
                                "image": "x",
                                "command": ["python3", "app.py"],
                                "env": [{"name": "VERSION", "value": version}],
                            }
                        ]
                    },
                },
                "traffic": traffic or [],
            },
        }
    )


KEY = ("default", "hello")


def test_first_apply_creates_a_revision_and_no_route_until_ready() -> None:
    result = apply_manifests(ClusterState(), [(svc(), "/apps")])
    record = result.state.services[KEY]
    assert result.messages == ("service.serving.knative.dev/hello created",)
    assert result.created_revisions == ((KEY, "hello-00001"),)
    assert record.route is None
    assert record.route_reason == "RevisionMissing"
    assert record.workdirs == {"hello-00001": "/apps"}


def test_marking_ready_resolves_the_route() -> None:
    state = apply_manifests(ClusterState(), [(svc(), "/a")]).state
    state = mark_ready(state, KEY, "hello-00001")
    record = state.services[KEY]
    assert record.route_ready
    assert record.route is not None
    assert record.route.traffic == (TrafficTarget("hello-00001", 100),)
    assert routed_revisions(state) == {("default", "hello-00001")}


def test_mark_ready_twice_returns_the_same_state() -> None:
    state = mark_ready(apply_manifests(ClusterState(), [(svc(), "/a")]).state, KEY, "hello-00001")
    assert mark_ready(state, KEY, "hello-00001") is state
    assert mark_ready(state, ("default", "nope"), "x") is state


def test_reapplying_the_same_manifest_is_unchanged() -> None:
    state = apply_manifests(ClusterState(), [(svc(), "/a")]).state
    result = apply_manifests(state, [(svc(), "/b")])
    assert result.messages == ("service.serving.knative.dev/hello unchanged",)
    assert result.created_revisions == ()
    assert result.state.services[KEY].workdirs == {"hello-00001": "/a"}


def test_a_split_waiting_for_a_new_revision_keeps_the_previous_route() -> None:
    state = mark_ready(
        apply_manifests(ClusterState(), [(svc(rev="hello-v1"), "/a")]).state, KEY, "hello-v1"
    )
    split = [
        {"revisionName": "hello-v1", "percent": 50},
        {"revisionName": "hello-v2", "percent": 50},
    ]
    state = apply_manifests(state, [(svc(version="v2", rev="hello-v2", traffic=split), "/a")]).state
    record = state.services[KEY]
    assert record.route is not None
    assert [t.revision_name for t in record.route.traffic] == ["hello-v1"]
    assert record.route_reason == "RevisionNotReady"
    state = mark_ready(state, KEY, "hello-v2")
    route = state.services[KEY].route
    assert route is not None
    assert [(t.revision_name, t.percent) for t in route.traffic] == [
        ("hello-v1", 50),
        ("hello-v2", 50),
    ]


def test_a_bad_batch_changes_nothing() -> None:
    state = apply_manifests(ClusterState(), [(svc(rev="hello-v1"), "/a")]).state
    # Reusing an explicit revision name with another template is refused.
    with pytest.raises(ManifestError) as err:
        apply_manifests(state, [(svc("other"), "/a"), (svc(version="v9", rev="hello-v1"), "/a")])
    assert "Service default/hello" in err.value.messages[0]
    assert set(state.services) == {KEY}


def test_delete_removes_the_service_and_unknown_raises() -> None:
    state = apply_manifests(ClusterState(), [(svc(), "/a")]).state
    assert delete_service(state, KEY).services == {}
    with pytest.raises(KeyError):
        delete_service(state, ("default", "nope"))


def test_state_round_trips_through_the_store(tmp_path: Path) -> None:
    state = apply_manifests(ClusterState(), [(svc(), "/a"), (svc("web"), "/w")]).state
    state = mark_ready(state, KEY, "hello-00001")
    store = StateStore(tmp_path / "state")
    store.save(state)
    restored = store.load()
    assert restored.services.keys() == state.services.keys()
    for key in state.services:
        assert restored.services[key].to_dict() == state.services[key].to_dict()


def test_an_unreadable_state_file_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot restore state"):
        StateStore(tmp_path).load()


def test_a_missing_state_file_is_an_empty_state(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "nothing").load().services == {}
