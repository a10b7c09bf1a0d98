"""kn's flags → the Knative Service manifest ``sluice service create|update`` applies."""

from __future__ import annotations

from typing import Any

import pytest

from serving.kn import ServiceFlags, edit_service
from serving.manifest_loader import parse_service


def created(**kw: Any) -> dict[str, Any]:
    return edit_service(None, ServiceFlags(name="hello", **kw))


def existing() -> dict[str, Any]:
    """hello with two revisions, v1 tagged, 50/50, as the API returns a manifest."""
    body = created(image="img:1", env=("A=1", "B=2"), annotations=("team=blue",))
    body["spec"]["template"]["metadata"]["name"] = "hello-v2"
    body["spec"]["traffic"] = [
        {"revisionName": "hello-v1", "latestRevision": False, "percent": 50, "tag": "v1"},
        {"latestRevision": True, "percent": 50},
    ]
    return body


def test_create_builds_a_valid_minimal_service() -> None:
    body = created(image="img:1", namespace="dev", port="h2c:9000", concurrency_limit=10)
    assert body["metadata"] == {"name": "hello", "namespace": "dev"}
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container == {"image": "img:1", "ports": [{"containerPort": 9000, "name": "h2c"}]}
    assert body["spec"]["template"]["spec"]["containerConcurrency"] == 10
    assert body["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    svc = parse_service(body)  # strict validation accepts what kn builds
    assert (svc.namespace, svc.template.container.port) == ("dev", 9000)


def test_create_with_command_args_and_env() -> None:
    body = created(command=("python3", "app.py"), args=("--port", "$(PORT)"), env=("A=1",))
    c = body["spec"]["template"]["spec"]["containers"][0]
    assert (c["command"], c["args"], c["env"]) == (
        ["python3", "app.py"], ["--port", "$(PORT)"], [{"name": "A", "value": "1"}])  # fmt: skip


def test_annotations_go_to_service_and_template_autoscaling_to_the_template_only() -> None:
    body = created(image="i", annotations=("team=blue", "autoscaling.knative.dev/target=5"),
                   scale_min=1, scale_max=3)  # fmt: skip
    assert body["metadata"]["annotations"] == {"team": "blue"}
    assert body["spec"]["template"]["metadata"]["annotations"] == {
        "team": "blue",
        "autoscaling.knative.dev/target": "5",
        "autoscaling.knative.dev/min-scale": "1",
        "autoscaling.knative.dev/max-scale": "3",
    }


def test_update_sets_and_removes_env_and_annotations_and_drops_the_old_revision_name() -> None:
    body = edit_service(existing(), ServiceFlags(name="hello", env=("A-", "C=3"),
                                                  annotations=("team-",)))  # fmt: skip
    tmpl = body["spec"]["template"]
    assert tmpl["spec"]["containers"][0]["env"] == [
        {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]  # fmt: skip
    assert "annotations" not in body["metadata"] and "annotations" not in tmpl["metadata"]
    assert "name" not in tmpl["metadata"]  # a new revision gets a generated name
    assert body["spec"]["traffic"] == existing()["spec"]["traffic"]


def test_update_without_template_change_keeps_the_revision_name_and_revision_name_sets_it() -> None:
    same = edit_service(existing(), ServiceFlags(name="hello", traffic=("@latest=100",)))
    assert same["spec"]["template"]["metadata"]["name"] == "hello-v2"
    named = edit_service(existing(), ServiceFlags(name="hello", env=("X=1",),
                                                   revision_name="hello-v3"))  # fmt: skip
    assert named["spec"]["template"]["metadata"]["name"] == "hello-v3"


def test_traffic_by_revision_tag_and_latest_replaces_the_block() -> None:
    body = edit_service(existing(), ServiceFlags(
        name="hello", traffic=("v1=20", "hello-v2=30", "@latest=50")))  # fmt: skip
    assert body["spec"]["traffic"] == [
        {"revisionName": "hello-v1", "latestRevision": False, "percent": 20, "tag": "v1"},
        {"revisionName": "hello-v2", "latestRevision": False, "percent": 30},
        {"latestRevision": True, "percent": 50},
    ]
    parse_service(body)


def test_tag_adds_a_zero_percent_target_or_tags_an_existing_one_and_untag_removes() -> None:
    body = edit_service(existing(), ServiceFlags(name="hello", tags=("@latest=current",
                                                                     "hello-v0=old")))  # fmt: skip
    assert body["spec"]["traffic"][1] == {"latestRevision": True, "percent": 50, "tag": "current"}
    old = {"revisionName": "hello-v0", "latestRevision": False, "percent": 0, "tag": "old"}
    assert body["spec"]["traffic"][2] == old
    untagged = edit_service(body, ServiceFlags(name="hello", untag=("old", "v1")))
    assert untagged["spec"]["traffic"] == [
        {"revisionName": "hello-v1", "latestRevision": False, "percent": 50},
        {"latestRevision": True, "percent": 50, "tag": "current"},
    ]


@pytest.mark.parametrize(
    ("current", "flags", "message"),
    [
        (None, ServiceFlags(name="hello"), "--image: required to create a service (or --cmd)"),
        (None, ServiceFlags(name="hello", image="i", traffic=("a=100",)),
         "--traffic/--tag/--untag: only on update"),
        ("x", ServiceFlags(name="hello", traffic=("v1=20",)),
         "--traffic: percents sum to 20, want 100"),
        ("x", ServiceFlags(name="hello", traffic=("v1=120",)),
         "--traffic 'v1=120': percent must be 0-100"),
        ("x", ServiceFlags(name="hello", traffic=("v1",)), "--traffic 'v1': want KEY=VALUE"),
        ("x", ServiceFlags(name="hello", tags=("hello-v2=v1",)),
         "--tag 'hello-v2=v1': tag v1 is already used"),
        ("x", ServiceFlags(name="hello", untag=("nope",)),
         "--untag nope: no traffic target has this tag"),
        ("x", ServiceFlags(name="hello", env=("=x",)), "--env '=x': want KEY=VALUE or KEY-"),
        ("x", ServiceFlags(name="hello", port="http:0"),
         "--port 'http:0': want PORT or NAME:PORT (1-65535)"),
        ("x", ServiceFlags(name="hello", scale_min=-1), "--scale-min -1: must be at least 0"),
        ("x", ServiceFlags(name="hello", scale_min=5, scale_max=2),
         "--scale-min 5: above --scale-max 2"),
        ("x", ServiceFlags(name="hello", revision_name="other-v1"),
         "--revision-name other-v1: must start with 'hello-'"),
    ],
)  # fmt: skip
def test_bad_flags_are_refused_naming_the_flag(
    current: str | None, flags: ServiceFlags, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        edit_service(existing() if current else None, flags)
    assert str(info.value).startswith(message)


def test_edit_does_not_mutate_the_current_manifest() -> None:
    current = existing()
    edit_service(current, ServiceFlags(name="hello", env=("Z=1",), traffic=("@latest=100",)))
    assert current == existing()
