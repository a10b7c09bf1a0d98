"""Strict validation: unknown fields, duplicate keys, wrong types and unsupported fields are
named with file, line and field path; the schema names every field Knative's CRDs allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from serving import schema
from serving.manifest import ManifestError
from serving.manifest_loader import load_manifests, parse_service
from serving.yaml_source import read_documents

CRDS = Path("/work/shared/knative/v1.23.0/300-resources")

HELLO = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
"""


def errors(text: str, **kw: Any) -> tuple[str, ...]:
    with pytest.raises(ManifestError) as info:
        load_manifests(text, "s.yaml", **kw)
    return info.value.messages


def test_misspelled_field_is_refused_with_line_path_and_the_name_meant() -> None:
    text = HELLO.replace("    spec:\n", "    spec:\n      containerConcurency: 10\n")
    assert errors(text) == (
        's.yaml:8: unknown field "containerConcurency" (did you mean "containerConcurrency"?): '
        "spec.template.spec.containerConcurency",
    )


def test_misspelled_traffic_is_refused_rather_than_defaulted_to_latest() -> None:
    text = HELLO + "  trafic:\n    - revisionName: hello-00001\n      percent: 100\n"
    assert errors(text) == (
        's.yaml:10: unknown field "trafic" (did you mean "traffic"?): spec.trafic',
    )


def test_duplicate_mapping_key_is_refused_with_both_lines() -> None:
    text = HELLO.replace("  name: hello\n", "  name: hello\n  name: world\n")
    assert errors(text) == (
        's.yaml:5: mapping key "name" already defined at line 4: metadata.name',
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "  name: hello\n",
            "  name: hello\n  annotations:\n    autoscaling.knative.dev/target: 10\n",
            "s.yaml:6: invalid value: 10 (expected a string): "
            "metadata.annotations[autoscaling.knative.dev/target]",
        ),
        (
            "    spec:\n",
            "    spec:\n      timeoutSeconds: '30'\n",
            "s.yaml:8: invalid value: '30' (expected an integer): "
            "spec.template.spec.timeoutSeconds",
        ),
        (
            "latest\n",
            "latest\n          env:\n            - name: PORTX\n              value: 8080\n",
            "s.yaml:12: invalid value: 8080 (expected a string): "
            "spec.template.spec.containers[0].env[0].value",
        ),
        (
            "latest\n",
            "latest\n          args: two words\n",
            "s.yaml:10: invalid value: 'two words' (expected a list): "
            "spec.template.spec.containers[0].args",
        ),
    ],
)
def test_wrong_types_are_refused_once_with_their_path(old: str, new: str, message: str) -> None:
    assert errors(HELLO.replace(old, new)) == (message,)


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("    spec:\n", "    spec:\n      volumes: [{name: v}]\n", "spec.template.spec.volumes"),
        (
            "    spec:\n",
            "    spec:\n      initContainers: [{image: i}]\n",
            "spec.template.spec.initContainers",
        ),
        (
            "latest\n",
            "latest\n          volumeMounts: [{name: v, mountPath: /v}]\n",
            "spec.template.spec.containers[0].volumeMounts",
        ),
        (
            "latest\n",
            "latest\n          env: [{name: A, valueFrom: {fieldRef: {}}}]\n",
            "spec.template.spec.containers[0].env[0].valueFrom",
        ),
        (
            "latest\n",
            "latest\n          readinessProbe: {grpc: {port: 9000}}\n",
            "spec.template.spec.containers[0].readinessProbe.grpc",
        ),
    ],
)
def test_fields_sluice_cannot_honour_are_refused_by_name(old: str, new: str, path: str) -> None:
    (message,) = errors(HELLO.replace(old, new))
    assert "not supported by sluice" in message and message.endswith(path)


def test_a_second_container_is_refused_by_name() -> None:
    text = HELLO + "        - image: sidecar\n"
    assert any(
        "single-container" in m and m.endswith("spec.template.spec.containers")
        for m in errors(text)
    )


def test_ignored_fields_are_warnings_with_line_and_path() -> None:
    text = HELLO.replace("    spec:\n", "    spec:\n      serviceAccountName: robot\n")
    text = text.replace("latest\n", "latest\n          livenessProbe: {tcpSocket: {}}\n")
    (svc,) = load_manifests(text, "s.yaml")
    assert svc.warnings == (
        "s.yaml:8: ignored by sluice (sluice has no service accounts): "
        "spec.template.spec.serviceAccountName",
        "s.yaml:11: ignored by sluice (sluice restarts a pod only when its process exits): "
        "spec.template.spec.containers[0].livenessProbe",
    )


def test_one_bad_document_refuses_the_whole_batch() -> None:
    bad = HELLO.replace("name: hello", "name: world").replace(
        "    spec:\n", "    spec:\n      x: 1\n"
    )
    messages = errors(HELLO + "---\n" + bad)
    assert messages == ('s.yaml:18: unknown field "x": spec.template.spec.x',)


def test_server_set_metadata_and_status_are_accepted_so_get_output_applies_back() -> None:
    doc: dict[str, Any] = yaml.safe_load(HELLO)
    doc["metadata"].update(uid="u", resourceVersion="1", generation=2, creationTimestamp="t")
    doc["status"] = {"url": "http://hello.default.localhost"}
    svc = parse_service(doc)
    assert svc.name == "hello" and svc.warnings == ()


def test_default_namespace_keeps_line_numbers_and_refuses_a_conflicting_one() -> None:
    (svc,) = load_manifests(HELLO, "s.yaml", namespace="dev")
    assert svc.namespace == "dev"
    text = HELLO.replace("  name: hello\n", "  name: hello\n  namespace: prod\n  bogus: 1\n")
    assert errors(text, namespace="dev") == (
        's.yaml:6: unknown field "bogus": metadata.bogus',
        's.yaml:5: the namespace from the provided object "prod" does not match the namespace '
        '"dev" (-n): metadata.namespace',
    )


def test_yaml_syntax_error_names_the_line() -> None:
    assert errors("kind: Service\nmetadata: [unclosed\n") == (
        "s.yaml: invalid YAML: line 3: expected ',' or ']', but got '<stream end>'",
    )


def test_read_documents_records_lines_and_falls_back_to_the_parent() -> None:
    (doc,) = read_documents("a:\n  b:\n    - c: 1\n      d: 2\n")
    assert doc.line_of("a.b[0].d") == 4
    assert doc.line_of("a.b[0].missing") == 3
    assert doc.line_of("a[b]") == 2


# The schema against Knative's own CRDs (test data by path; Sluice does not read them).


def _crd_fields(crd: str, root: str) -> set[str]:
    text = (CRDS / crd).read_text()
    node = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in root.split("."):
        node = node["properties"][part]
    found: set[str] = set()

    def walk(n: dict[str, Any], path: str) -> None:
        if n.get("type") == "array":
            walk(n["items"], path + "[]")
        for key, sub in n.get("properties", {}).items():
            found.add(f"{path}.{key}")
            walk(sub, f"{path}.{key}")

    walk(node, root)
    return found


def _schema_fields(f: schema.Field, path: str, crd: set[str]) -> set[str]:
    """Fields named by Sluice's schema, down to where Knative's CRD stops describing; a field
    taken whole (any content, or refused) covers all of Knative's below it, as ``path.*``."""
    if f.kind == "any" or f.support == schema.REFUSED:
        return {path + ".*"}
    if f.kind == "list" and f.item is not None:
        return _schema_fields(f.item, path + "[]", crd)
    found: set[str] = set()
    for key, sub in f.fields.items():
        found.add(f"{path}.{key}")
        if any(c.startswith(f"{path}.{key}.") or c.startswith(f"{path}.{key}[]") for c in crd):
            found |= _schema_fields(sub, f"{path}.{key}", crd)
    return found


@pytest.mark.parametrize(
    ("crd", "root", "field"),
    [
        ("service.yaml", "spec", schema.SERVICE.fields["spec"]),
        ("configuration.yaml", "spec.template", schema.TEMPLATE),
        ("route.yaml", "spec.traffic", schema.SERVICE.fields["spec"].fields["traffic"]),
    ],
)
def test_schema_names_exactly_the_fields_of_knatives_crds(
    crd: str, root: str, field: schema.Field
) -> None:
    knative = _crd_fields(crd, root)
    sluice = _schema_fields(field, root, knative)
    # Every field Knative allows is named (honoured, ignored or refused), and Sluice invents
    # none, except the envFrom/valueFrom key refs Knative leaves undescribed.
    whole = tuple(f[:-2] for f in sluice if f.endswith(".*"))
    assert {f for f in knative - sluice if not f.startswith(whole)} == set()
    extra = {f for f in sluice - knative if not f.endswith((".key", ".optional", ".*"))}
    assert extra == set()
