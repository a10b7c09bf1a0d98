"""Revision naming and Knative traffic resolution, including the tutorial scenarios."""

from __future__ import annotations

from typing import Any

import pytest

from activator.model import Revision, Route, TrafficTarget
from serving.manifest import ServiceManifest
from serving.manifest_loader import parse_service
from serving.revisions import (
    REASON_REVISION_MISSING,
    REASON_REVISION_NOT_READY,
    RevisionError,
    RevisionRecord,
    RevisionTraffic,
    build_revision,
    latest_created,
    latest_ready,
    plan_revision,
    resolve_route,
    revision_name,
    revision_traffic,
    set_ready,
)


def service(
    target: str = "World",
    traffic: list[dict[str, Any]] | None = None,
    name: str = "",
    cc: int = 0,
) -> ServiceManifest:
    metadata = {"name": name} if name else {}
    doc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": "demo"},
        "spec": {
            "template": {
                "metadata": metadata,
                "spec": {
                    "containerConcurrency": cc,
                    "containers": [
                        {
                            "image": "helloworld",
                            "command": ["python", "app.py"],
                            "env": [{"name": "TARGET", "value": target}],
                        }
                    ],
                },
            },
            "traffic": traffic or [],
        },
    }
    return parse_service(doc)


def apply_all(*manifests: ServiceManifest, ready: bool = True) -> tuple[RevisionRecord, ...]:
    """Apply manifests in order, marking each created revision ready when ``ready``."""
    history: tuple[RevisionRecord, ...] = ()
    for manifest in manifests:
        plan = plan_revision(history, manifest)
        history = plan.history
        if ready:
            history = set_ready(history, plan.revision.name)
    return history


def targets(*entries: tuple[str, int, str | None]) -> tuple[TrafficTarget, ...]:
    return tuple(TrafficTarget(name, pct, tag) for name, pct, tag in entries)


# --- naming -----------------------------------------------------------------------------------


def test_first_apply_creates_generation_one_named_after_the_service() -> None:
    plan = plan_revision((), service())
    assert plan.created
    assert (plan.revision.name, plan.revision.generation) == ("hello-00001", 1)
    assert plan.history == (plan.revision,)


@pytest.mark.parametrize(
    ("second", "created", "name"),
    [
        (service(), False, "hello-00001"),
        (service(traffic=[{"percent": 100, "tag": "current"}]), False, "hello-00001"),
        (service(target="Sluice"), True, "hello-00002"),
        (service(cc=10), True, "hello-00002"),
        (service(name="hello-v2"), True, "hello-v2"),
    ],
)
def test_a_new_revision_is_created_only_when_the_template_changes(
    second: ServiceManifest, created: bool, name: str
) -> None:
    history = plan_revision((), service()).history
    plan = plan_revision(history, second)
    assert (plan.created, plan.revision.name) == (created, name)
    assert len(plan.history) == len(history) + created


def test_revision_names_are_zero_padded_generations() -> None:
    assert revision_name("hello", 1) == "hello-00001"
    assert revision_name("hello", 123) == "hello-00123"


def test_reusing_a_template_name_with_a_different_template_is_refused() -> None:
    history = plan_revision((), service(name="hello-v1")).history
    with pytest.raises(RevisionError) as info:
        plan_revision(history, service(target="Changed", name="hello-v1"))
    text = str(info.value)
    assert text.startswith("Saw the following changes without a name change (-old +new)")
    assert "-spec.containers[0].env[0].value: 'World'" in text
    assert "+spec.containers[0].env[0].value: 'Changed'" in text


def test_pointing_the_template_back_at_an_old_named_revision_makes_it_latest_again() -> None:
    history = apply_all(service(name="hello-v1"), service(target="2", name="hello-v2"))
    plan = plan_revision(history, service(name="hello-v1"))
    assert not plan.created
    assert (plan.revision.name, plan.revision.generation) == ("hello-v1", 3)
    latest = latest_created(plan.history)
    assert latest is not None and latest.name == "hello-v1"
    after = plan_revision(plan.history, service(target="4"))
    assert after.revision.name == "hello-00004"


def test_a_generated_name_taken_by_an_explicit_one_is_refused() -> None:
    history = plan_revision((), service(name="hello-00002")).history
    with pytest.raises(RevisionError, match='revision "hello-00002" already exists'):
        plan_revision(history, service(target="other"))


def test_removing_an_explicit_name_creates_a_generated_revision() -> None:
    history = plan_revision((), service(name="hello-v1")).history
    plan = plan_revision(history, service())
    assert (plan.created, plan.revision.name) == (True, "hello-00002")


def test_latest_ready_is_the_newest_ready_revision() -> None:
    history = apply_all(service(), service(target="2"))
    history = plan_revision(history, service(target="3")).history
    ready = latest_ready(history)
    created = latest_created(history)
    assert ready is not None and ready.name == "hello-00002"
    assert created is not None and created.name == "hello-00003"
    assert latest_ready(set_ready(history, "hello-00002", False)) == history[0]


def test_set_ready_on_an_unknown_revision_raises_key_error() -> None:
    with pytest.raises(KeyError):
        set_ready((), "nope")


def test_records_round_trip_through_to_dict() -> None:
    (record,) = apply_all(service(cc=5))
    assert RevisionRecord.from_dict(record.to_dict(), "hello") == record


# --- traffic resolution -----------------------------------------------------------------------


def test_default_traffic_goes_to_the_latest_ready_revision() -> None:
    history = apply_all(service())
    result = resolve_route(service(), history)
    assert result.resolved
    assert result.route == Route("hello", "demo", targets(("hello-00001", 100, None)))


def test_a_new_revision_gets_traffic_only_once_ready() -> None:
    history = apply_all(service())
    history = plan_revision(history, service(target="2")).history
    route = resolve_route(service(target="2"), history).route
    assert route is not None and route.traffic == targets(("hello-00001", 100, None))
    route = resolve_route(service(target="2"), set_ready(history, "hello-00002")).route
    assert route is not None and route.traffic == targets(("hello-00002", 100, None))


def test_without_any_ready_revision_the_previous_route_is_kept() -> None:
    history = plan_revision((), service()).history
    previous = Route("hello", "demo", targets(("old", 100, None)))
    result = resolve_route(service(), history, previous)
    assert not result.resolved
    assert result.route is previous
    assert result.reason == REASON_REVISION_MISSING
    assert "unready configuration" in result.message
    assert resolve_route(service(), history).route is None


@pytest.mark.parametrize(
    ("traffic", "ready", "reason", "message"),
    [
        (
            [{"revisionName": "hello-00009", "percent": 100}],
            True,
            REASON_REVISION_MISSING,
            'Revision "hello-00009" referenced in traffic not found',
        ),
        (
            [{"revisionName": "hello-00001", "percent": 100}],
            False,
            REASON_REVISION_NOT_READY,
            'Revision "hello-00001" is not ready',
        ),
    ],
)
def test_unresolvable_revision_names_keep_the_previous_route(
    traffic: list[dict[str, Any]], ready: bool, reason: str, message: str
) -> None:
    history = apply_all(service(), ready=ready)
    result = resolve_route(service(traffic=traffic), history)
    assert (result.resolved, result.reason, result.message) == (False, reason, message)


TUTORIAL = [
    pytest.param(
        [
            {"revisionName": "hello-00001", "percent": 50},
            {"latestRevision": True, "percent": 50},
        ],
        targets(("hello-00001", 50, None), ("hello-00003", 50, None)),
        id="canary-50-50",
    ),
    pytest.param(
        [
            {"revisionName": "hello-00001", "percent": 90},
            {"latestRevision": True, "percent": 10},
        ],
        targets(("hello-00001", 90, None), ("hello-00003", 10, None)),
        id="canary-10-90",
    ),
    pytest.param(
        [
            {"revisionName": "hello-00001", "percent": 40, "tag": "v1"},
            {"revisionName": "hello-00002", "percent": 30, "tag": "v2"},
            {"revisionName": "hello-00003", "percent": 30, "tag": "v3"},
            {"latestRevision": True, "percent": 0, "tag": "latest"},
        ],
        targets(
            ("hello-00001", 40, "v1"),
            ("hello-00002", 30, "v2"),
            ("hello-00003", 30, "v3"),
            ("hello-00003", 0, "latest"),
        ),
        id="three-way-40-30-30-with-latest-tag",
    ),
    pytest.param(
        [{"revisionName": "hello-00001", "percent": 100}],
        targets(("hello-00001", 100, None)),
        id="rollback",
    ),
    pytest.param(
        [
            {"revisionName": "hello-00002", "percent": 60},
            {"revisionName": "hello-00002", "percent": 40, "tag": "b"},
        ],
        targets(("hello-00002", 60, None), ("hello-00002", 40, "b")),
        id="same-revision-entries-stay-separate",
    ),
]


@pytest.mark.parametrize(("traffic", "expected"), TUTORIAL)
def test_tutorial_traffic_splits_resolve_to_routes(
    traffic: list[dict[str, Any]], expected: tuple[TrafficTarget, ...]
) -> None:
    history = apply_all(service("1"), service("2"), service("3"))
    result = resolve_route(service("3", traffic), history)
    assert result.resolved, result.message
    assert result.route == Route("hello", "demo", expected)


def test_blue_green_sends_green_traffic_only_through_its_tag_once_ready() -> None:
    blue = service("blue", name="hello-blue")
    history = apply_all(blue)
    first = resolve_route(blue, history).route
    traffic = [
        {"revisionName": "hello-blue", "percent": 100},
        {"revisionName": "hello-green", "percent": 0, "tag": "green"},
    ]
    green = service("green", traffic, name="hello-green")
    history = plan_revision(history, green).history
    waiting = resolve_route(green, history, first)
    assert not waiting.resolved and waiting.route == first
    done = resolve_route(green, set_ready(history, "hello-green"), first)
    assert done.route == Route(
        "hello", "demo", targets(("hello-blue", 100, None), ("hello-green", 0, "green"))
    )
    flipped = service(
        "green",
        [
            {"revisionName": "hello-blue", "percent": 0, "tag": "blue"},
            {"revisionName": "hello-green", "percent": 100},
        ],
        name="hello-green",
    )
    route = resolve_route(flipped, set_ready(history, "hello-green")).route
    assert route is not None
    assert route.traffic == targets(("hello-blue", 0, "blue"), ("hello-green", 100, None))


# --- data-plane values and display ------------------------------------------------------------


def test_build_revision_carries_the_template_settings() -> None:
    manifest = service(cc=7)
    (record,) = apply_all(manifest)
    assert build_revision(record, manifest, ("127.0.0.1:9001",)) == Revision(
        name="hello-00001",
        namespace="demo",
        container_concurrency=7,
        timeout_seconds=300,
        endpoints=("127.0.0.1:9001",),
        service="hello",
        configuration="hello",
    )


def test_revision_traffic_adds_up_entries_and_lists_tags_newest_first() -> None:
    history = apply_all(service("1"), service("2"), service("3"))
    route = Route(
        "hello",
        "demo",
        targets(("hello-00002", 60, None), ("hello-00002", 40, "b"), ("hello-00003", 0, "latest")),
    )
    assert revision_traffic(history, route) == (
        RevisionTraffic("hello-00003", 3, True, 0, ("latest",)),
        RevisionTraffic("hello-00002", 2, True, 100, ("b",)),
        RevisionTraffic("hello-00001", 1, True, 0, ()),
    )
    assert [r.percent for r in revision_traffic(history, None)] == [0, 0, 0]
