"""``sluice get``'s pure part: resource names, label selectors, filtering and printing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from serving import kubeprint
from serving.cli import build_parser, main


def _ksvc(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "status": {
            "url": f"http://{name}.{ns}.localhost",
            "latestCreatedRevisionName": f"{name}-00001",
            "latestReadyRevisionName": f"{name}-00001",
            "conditions": [{"type": "Ready", "status": "True"}],
            "traffic": [{"revisionName": f"{name}-00001", "percent": 100}],
        },
    }


ITEMS = [_ksvc("a", app="web"), _ksvc("b", "prod", app="db"), _ksvc("c", tier="x")]


@pytest.mark.parametrize(
    ("alias", "plural"),
    [("ksvc", "services"), ("rev", "revisions"), ("po", "pods"), ("cfg", "configurations"),
     ("Routes", "routes")],
)  # fmt: skip
def test_aliases_resolve_as_kubectl_short_names(alias: str, plural: str) -> None:
    assert kubeprint.resource(alias).plural == plural


def test_unknown_resource_is_named() -> None:
    with pytest.raises(ValueError, match='resource type "deployments"'):
        kubeprint.resource("deployments")


@pytest.mark.parametrize(
    ("selector", "names"),
    [("app=web", ["a"]), ("app==db", ["b"]), ("app!=web", ["b", "c"]), ("app", ["a", "b"]),
     ("!app", ["c"]), ("app,app!=db", ["a"])],
)  # fmt: skip
def test_label_selectors_filter_across_namespaces(selector: str, names: list[str]) -> None:
    found = kubeprint.select(ITEMS, None, selector=kubeprint.parse_selector(selector))
    assert [o["metadata"]["name"] for o in found] == names


@pytest.mark.parametrize("bad", ["", "a b", "app=,", "=x", "a(b)"])
def test_bad_selectors_name_the_flag(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^-l "):
        kubeprint.parse_selector(bad)


def test_select_by_namespace_and_name_and_report_missing() -> None:
    found = kubeprint.select(ITEMS, "default", ["c", "b", "a"])
    assert [o["metadata"]["name"] for o in found] == ["c", "a"]
    assert kubeprint.missing(found, ["c", "b", "a"]) == ["b"]
    res = kubeprint.resource("ksvc")
    assert kubeprint.not_found(res, "b") == (
        'Error from server (NotFound): services.serving.knative.dev "b" not found'
    )


def test_empty_list_wording_is_kubectls() -> None:
    assert kubeprint.no_resources("dev") == "No resources found in dev namespace."
    assert kubeprint.no_resources(None) == "No resources found"


def test_all_namespaces_adds_the_namespace_column() -> None:
    res = kubeprint.resource("ksvc")
    text = kubeprint.render_objects(res, ITEMS[:2], "", all_namespaces=True, single=False)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "NAME", "URL"]
    assert lines[2].split()[:2] == ["prod", "b"]
    plain = kubeprint.render_objects(res, ITEMS[:1], "", all_namespaces=False, single=False)
    assert plain.splitlines()[0].split()[:2] == ["NAME", "URL"]
    wide = kubeprint.render_objects(res, ITEMS[:1], "wide", all_namespaces=False, single=False)
    assert wide.splitlines()[0].split()[-1] == "TRAFFIC"


def test_json_and_yaml_print_one_object_or_a_list() -> None:
    res = kubeprint.resource("ksvc")
    one = yaml.safe_load(kubeprint.render_objects(res, ITEMS[:1], "yaml", False, single=True))
    assert one["kind"] == "Service" and one["status"]["url"] == "http://a.default.localhost"
    many = json.loads(kubeprint.render_objects(res, ITEMS, "json", False, single=False))
    assert many["kind"] == "List" and len(many["items"]) == 3


def test_name_output_is_qualified() -> None:
    assert kubeprint.render_objects(kubeprint.resource("ksvc"), ITEMS[:1], "name", False,
                                    single=False) == "service.serving.knative.dev/a"  # fmt: skip
    pod = {"metadata": {"name": "p", "namespace": "default"}}
    assert kubeprint.render_objects(kubeprint.resource("po"), [pod], "name", False,
                                    single=False) == "pod/p"  # fmt: skip


def test_get_flags_parse_like_kubectl() -> None:
    args = build_parser().parse_args(["get", "ksvc", "hello", "-n", "dev", "-o", "yaml", "-l",
                                      "app=x"])  # fmt: skip
    assert (args.kind, args.names, args.namespace, args.output, args.selector) == (
        "ksvc", ["hello"], "dev", "yaml", "app=x")  # fmt: skip
    assert build_parser().parse_args(["get", "pods", "-A"]).all_namespaces


def test_usage_errors_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["get"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kind" in err


def test_bad_output_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--api", "127.0.0.1:1", "get", "ksvc", "-o", "table"]) == 1
    assert capsys.readouterr().err.strip() == "error: -o table: want one of wide, json, yaml, name"
