"""Knative Service manifests: defaulting, validation messages, loading, fingerprints."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.manifest import (
    Container,
    ManifestError,
    ReadinessProbe,
    ServiceManifest,
    TrafficEntry,
    no_command_message,
)
from serving.manifest_loader import load_manifests, load_path, parse_service

HELLO = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          command: ["python", "-m", "http.server"]
"""


def doc(**spec_template_spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = yaml.safe_load(HELLO)
    base["spec"]["template"]["spec"].update(spec_template_spec)
    return base


def errors_of(document: object) -> tuple[str, ...]:
    with pytest.raises(ManifestError) as info:
        parse_service(document)
    return info.value.messages


def test_minimal_service_is_defaulted_like_knative() -> None:
    (svc,) = load_manifests(HELLO)
    assert svc.name == "hello"
    assert svc.namespace == "default"
    assert svc.traffic == (TrafficEntry(revision_name="", latest_revision=True, percent=100),)
    t = svc.template
    assert (t.name, t.container_concurrency, t.timeout_seconds) == ("", 0, 300)
    assert (t.response_start_timeout_seconds, t.idle_timeout_seconds) == (0, 0)
    assert t.container.port == 8080
    assert t.container.readiness_probe == ReadinessProbe(handler="tcpSocket")


@pytest.mark.parametrize(
    ("entry", "expected_latest"),
    [
        ({"percent": 100}, True),
        ({"percent": 100, "revisionName": "hello-00001"}, False),
        ({"percent": 100, "latestRevision": True}, True),
        ({"percent": 100, "latestRevision": False, "revisionName": "hello-00001"}, False),
    ],
)
def test_latest_revision_defaults_to_revision_name_being_empty(
    entry: dict[str, Any], expected_latest: bool
) -> None:
    d = doc()
    d["spec"]["traffic"] = [entry]
    assert parse_service(d).traffic[0].latest_revision is expected_latest


def test_empty_traffic_list_defaults_to_all_traffic_to_latest() -> None:
    d = doc()
    d["spec"]["traffic"] = []
    assert parse_service(d).traffic == (TrafficEntry(latest_revision=True, percent=100),)


def _with(path: str, value: Any) -> dict[str, Any]:
    d = doc()
    node: Any = d
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[keys[-1]] = value
    return d


TR = "spec.traffic"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            _with(TR, [{"percent": 90}]),
            "Traffic targets sum to 90, want 100: spec.traffic",
        ),
        (
            _with("spec.template.spec.containerConcurrency", -1),
            "invalid value: -1: spec.template.spec.containerConcurrency",
        ),
        (
            _with("spec.template.spec.containerConcurrency", 1001),
            "expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency",
        ),
        (
            _with("spec.template.spec.timeoutSeconds", 601),
            "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds",
        ),
        (
            _with("spec.template.spec.responseStartTimeoutSeconds", 400),
            "expected 0 <= 400 <= 300: spec.template.spec.responseStartTimeoutSeconds",
        ),
        (
            _with("spec.template.spec.idleTimeoutSeconds", -5),
            "expected 0 <= -5 <= 600: spec.template.spec.idleTimeoutSeconds",
        ),
        (
            _with(TR, [{"percent": 100, "latestRevision": True, "revisionName": "hello-1"}]),
            "expected exactly one, got both: spec.traffic[0].latestRevision, "
            "spec.traffic[0].revisionName",
        ),
        (
            _with(TR, [{"percent": 100, "latestRevision": False}]),
            "missing field(s) (latestRevision: false needs a revisionName): "
            "spec.traffic[0].revisionName",
        ),
        (
            _with(TR, [{"percent": 50, "tag": "v1"}, {"percent": 50, "tag": "v1"}]),
            'Multiple definitions for "v1": spec.traffic[0].tag, spec.traffic[1].tag',
        ),
        (
            _with(TR, [{"percent": 101}]),
            "expected 0 <= 101 <= 100: spec.traffic[0].percent",
        ),
        (
            _with(TR, [{"percent": 100, "configurationName": "hello"}]),
            "must not set the field(s): spec.traffic[0].configurationName",
        ),
        (
            _with("spec.template.metadata", {"name": "other-v1"}),
            'invalid value: "other-v1" must have prefix "hello-": spec.template.metadata.name',
        ),
        (
            _with("spec.template.spec.containers", []),
            "missing field(s): spec.template.spec.containers",
        ),
        (
            _with("spec.template.spec.containers", [{"image": "a"}, {"image": "b"}]),
            "expected exactly one, got 2 (sluice runs single-container revisions): "
            "spec.template.spec.containers",
        ),
        (
            _with("spec.template.spec.containers", [{"command": ["x"]}]),
            "missing field(s): spec.template.spec.containers[0].image",
        ),
        (
            _with("spec.template.spec.containers.0.ports", [{"containerPort": 8012}]),
            "8012 is a reserved port: spec.template.spec.containers[0].ports[0].containerPort",
        ),
        (
            _with(
                "spec.template.spec.containers.0.ports",
                [{"containerPort": 8080}, {"containerPort": 8081}],
            ),
            "more than one container port is set: spec.template.spec.containers[0].ports",
        ),
        (
            _with(
                "spec.template.spec.containers.0.ports", [{"containerPort": 8080, "name": "grpc"}]
            ),
            "invalid value: grpc: spec.template.spec.containers[0].ports[0].name",
        ),
        (
            _with("spec.template.spec.containers.0.env", [{"value": "x"}]),
            "missing field(s): spec.template.spec.containers[0].env[0].name",
        ),
        (
            _with(
                "spec.template.spec.containers.0.readinessProbe",
                {"httpGet": {"path": "/"}, "tcpSocket": {}},
            ),
            "expected exactly one, got both: spec.template.spec.containers[0].readinessProbe"
            ".httpGet, spec.template.spec.containers[0].readinessProbe.tcpSocket",
        ),
        (
            _with("spec.template.spec.containers.0.readinessProbe", {"failureThreshold": 0}),
            "invalid value: 0: spec.template.spec.containers[0].readinessProbe.failureThreshold",
        ),
        (
            {**doc(), "apiVersion": "serving.knative.dev/v1alpha1"},
            'unsupported apiVersion "serving.knative.dev/v1alpha1", want serving.knative.dev/v1: '
            "apiVersion",
        ),
        (
            {**doc(), "metadata": {}},
            "missing field(s): metadata.name",
        ),
        (
            {**doc(), "metadata": {"name": "Hello_World"}},
            'invalid value: "Hello_World": must be a DNS-1035 label: metadata.name',
        ),
    ],
)
def test_validation_reports_knative_message_with_field_path(
    document: dict[str, Any], message: str
) -> None:
    assert message in errors_of(document)


@pytest.mark.parametrize("tag", ["V1", "1v", "v_1", "-v", "v-", "a" * 64])
def test_tags_must_be_dns_1035_labels(tag: str) -> None:
    (message,) = errors_of(_with(TR, [{"percent": 100, "tag": tag}]))
    assert message.startswith(f'invalid key name "{tag}"')
    assert message.endswith(": spec.traffic[0].tag")


ANN = "spec.template.metadata.annotations"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {"autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/max-scale": "2"},
            f"min-scale=3 is greater than max-scale=2: {ANN}[autoscaling.knative.dev/min-scale]",
        ),
        (
            {"autoscaling.knative.dev/min-scale": "two"},
            f"invalid value: two: {ANN}[autoscaling.knative.dev/min-scale]",
        ),
        (
            {"autoscaling.knative.dev/max-scale": "1.5"},
            f"invalid value: 1.5: {ANN}[autoscaling.knative.dev/max-scale]",
        ),
        (
            {"autoscaling.knative.dev/window": "5s"},
            f"expected 6s <= 5s <= 1h: {ANN}[autoscaling.knative.dev/window]",
        ),
        (
            {"autoscaling.knative.dev/window": "2h"},
            f"expected 6s <= 2h <= 1h: {ANN}[autoscaling.knative.dev/window]",
        ),
        (
            {"autoscaling.knative.dev/initial-scale": "0"},
            f"expected 1 <= 0 <= 2147483647: {ANN}[autoscaling.knative.dev/initial-scale]",
        ),
        (
            {"autoscaling.knative.dev/panic-threshold-percentage": "100"},
            f"expected 110 <= 100 <= 1000: {ANN}"
            "[autoscaling.knative.dev/panic-threshold-percentage]",
        ),
        (
            {"autoscaling.knative.dev/target": "0"},
            f"expected 0.01 <= 0 <= 2147483647: {ANN}[autoscaling.knative.dev/target]",
        ),
        (
            {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"},
            f"invalid value: hpa.autoscaling.knative.dev: {ANN}[autoscaling.knative.dev/class]"
            " (sluice runs only the KPA, kpa.autoscaling.knative.dev)",
        ),
        (
            {"autoscaling.knative.dev/metric": "cpu"},
            f"invalid value: cpu: {ANN}[autoscaling.knative.dev/metric]",
        ),
    ],
)
def test_invalid_autoscaling_annotations_are_refused(
    annotations: dict[str, str], message: str
) -> None:
    assert message in errors_of(_with("spec.template.metadata.annotations", annotations))


def test_valid_autoscaling_annotations_are_kept() -> None:
    annotations = {
        "autoscaling.knative.dev/min-scale": "1",
        "autoscaling.knative.dev/max-scale": "3",
        "autoscaling.knative.dev/target": "10",
        "autoscaling.knative.dev/window": "1m",
    }
    svc = parse_service(_with("spec.template.metadata.annotations", annotations))
    assert svc.template.annotations == annotations


def test_every_error_of_a_manifest_is_reported() -> None:
    d = _with(TR, [{"percent": 50, "tag": "BAD"}])
    d["spec"]["template"]["spec"]["containerConcurrency"] = -1
    messages = errors_of(d)
    assert len(messages) == 3
    assert str(ManifestError(list(messages))).startswith("validation failed: ")


def test_non_service_kinds_are_rejected_clearly() -> None:
    with pytest.raises(ManifestError, match='unsupported kind "Route"'):
        load_manifests("apiVersion: serving.knative.dev/v1\nkind: Route\nmetadata: {name: r}\n")


def test_multi_document_yaml_loads_every_service_and_skips_empty_documents() -> None:
    text = HELLO + "---\n" + HELLO.replace("name: hello", "name: world") + "---\n"
    assert [s.name for s in load_manifests(text)] == ["hello", "world"]


def test_one_bad_document_refuses_all_with_file_and_line() -> None:
    bad = HELLO.replace("name: hello", "name: world").replace("image:", "imagex:")
    with pytest.raises(ManifestError) as info:
        load_manifests(HELLO + "---\n" + bad, source="a.yaml")
    assert info.value.messages == (
        'a.yaml:22: unknown field "imagex" (did you mean "image"?): '
        "spec.template.spec.containers[0].imagex",
        "a.yaml:22: missing field(s): spec.template.spec.containers[0].image",
    )


def test_duplicate_services_are_refused() -> None:
    with pytest.raises(ManifestError, match="default/hello is defined more than once"):
        load_manifests(HELLO + "---\n" + HELLO)


def test_invalid_yaml_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="invalid YAML"):
        load_manifests("kind: [unclosed")


def test_load_path_reads_yaml_files_of_a_directory_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(HELLO)
    (tmp_path / "a.yml").write_text(HELLO.replace("name: hello", "name: alpha"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    assert [s.name for s in load_path(tmp_path)] == ["alpha", "hello"]
    assert [s.name for s in load_path(tmp_path / "b.yaml")] == ["hello"]


def test_load_path_names_the_file_of_each_error(tmp_path: Path) -> None:
    (tmp_path / "route.yaml").write_text("apiVersion: serving.knative.dev/v1\nkind: Route\n")
    with pytest.raises(ManifestError) as info:
        load_path(tmp_path)
    assert info.value.messages[0].startswith(f"{tmp_path / 'route.yaml'}:2: unsupported kind")


def test_missing_path_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_path(tmp_path / "absent")


def test_missing_command_is_valid_but_the_embedded_runner_explains_it() -> None:
    svc = parse_service(_with("spec.template.spec.containers", [{"image": "ghcr.io/x:1"}]))
    assert no_command_message(svc.template.container) == (
        "container has no command: the embedded mode runs local processes and does not run "
        "images (image ghcr.io/x:1 recorded)"
    )
    assert no_command_message(Container(image="i", command=("python",))) is None


def test_container_fields_are_parsed() -> None:
    container = {
        "image": "img",
        "command": ["python", "app.py"],
        "args": ["--port", "9000"],
        "env": [{"name": "TARGET", "value": "Sluice"}],
        "ports": [{"containerPort": 9000, "name": "h2c"}],
        "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 2},
    }
    c = parse_service(_with("spec.template.spec.containers", [container])).template.container
    assert (c.command, c.args, c.port, c.port_name) == (
        ("python", "app.py"),
        ("--port", "9000"),
        9000,
        "h2c",
    )
    assert c.env[0].name == "TARGET" and c.env[0].value == "Sluice"
    assert c.readiness_probe.to_dict()["httpGet"] == {"path": "/healthz"}
    assert c.readiness_probe.period_seconds == 2


def test_to_dict_round_trips_to_an_equal_manifest() -> None:
    d = _with(TR, [{"percent": 90, "revisionName": "hello-00001"}, {"percent": 10, "tag": "c"}])
    d["spec"]["template"]["metadata"] = {"annotations": {"autoscaling.knative.dev/target": "5"}}
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["t"]}}
    svc = parse_service(d)
    assert parse_service(svc.to_dict()) == svc


@pytest.mark.parametrize(
    ("change", "same"),
    [
        (lambda d: d["spec"].update(traffic=[{"percent": 100, "tag": "x"}]), True),
        (lambda d: d["metadata"].update(labels={"team": "a"}), True),
        (lambda d: d["spec"]["template"]["spec"].update(containerConcurrency=0), True),
        (lambda d: d["spec"]["template"]["spec"].update(containerConcurrency=5), False),
        (
            lambda d: d["spec"]["template"].update(
                metadata={"annotations": {"autoscaling.knative.dev/max-scale": "3"}}
            ),
            False,
        ),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(args=["x"]), False),
    ],
)
def test_template_fingerprint_changes_only_with_the_template(change: Any, same: bool) -> None:
    base = doc()
    changed = copy.deepcopy(base)
    change(changed)
    a: ServiceManifest = parse_service(base)
    b: ServiceManifest = parse_service(changed)
    assert (a.template_fingerprint() == b.template_fingerprint()) is same
