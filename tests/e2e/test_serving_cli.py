"""The kubectl-shaped ``sluice get`` against a real ``sluice up``: two namespaces, names,
label selectors, every output, kubectl's wording for empty and missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_serving_support import EXAMPLES, sluice_up

PROD_HELLO = (
    (EXAMPLES / "hello.yaml")
    .read_text()
    .replace("  name: hello\n", "  name: hello\n  namespace: prod\n  labels:\n    team: blue\n", 1)
)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_get_is_shaped_like_kubectl(tmp_path: Path) -> None:
    (tmp_path / "apps").symlink_to(EXAMPLES / "apps")
    prod = tmp_path / "prod-hello.yaml"
    prod.write_text(PROD_HELLO)
    with sluice_up(tmp_path, EXAMPLES / "hello.yaml", prod) as s:
        s.wait_ready("hello", "hello-v1")

        table = s.cli("get", "ksvc", "-A").stdout.splitlines()
        assert table[0].split()[:3] == ["NAMESPACE", "NAME", "URL"]
        assert sorted(line.split()[0] for line in table[1:]) == ["default", "prod"]
        assert "NAMESPACE" not in s.cli("get", "ksvc").stdout

        svc = yaml.safe_load(s.cli("get", "ksvc", "hello", "-n", "prod", "-o", "yaml").stdout)
        assert (svc["apiVersion"], svc["kind"]) == ("serving.knative.dev/v1", "Service")
        assert svc["metadata"] == {"name": "hello", "namespace": "prod",
                                   "labels": {"team": "blue"}}  # fmt: skip
        assert svc["status"]["url"] == f"http://hello.prod.localhost:{s.port}"
        ready = {c["type"]: c["status"] for c in svc["status"]["conditions"]}
        assert ready == {"Ready": "True", "ConfigurationsReady": "True", "RoutesReady": "True"}
        assert svc["status"]["traffic"] == [
            {"revisionName": "hello-v1", "percent": 100, "latestRevision": True}
        ]

        listed = json.loads(s.cli("get", "revisions", "-A", "-o", "json").stdout)
        assert listed["kind"] == "List"
        assert {r["metadata"]["namespace"] for r in listed["items"]} == {"default", "prod"}

        by_label = s.cli("get", "ksvc", "-A", "-l", "team=blue", "-o", "name").stdout
        assert by_label.split() == ["service.serving.knative.dev/hello"]
        pods = s.cli("get", "pods", "-n", "prod", "-l", "serving.knative.dev/revision=hello-v1")
        assert pods.stdout.splitlines()[1].split()[1:3] == ["2/2", "Ready"]

        for kind in ("routes", "configurations", "revisions"):
            assert "hello" in s.cli("get", kind, "-n", "prod").stdout

        empty = s.cli("get", "ksvc", "-n", "nowhere")
        assert (empty.stdout, empty.stderr) == ("", "No resources found in nowhere namespace.\n")

        missing = s.cli("get", "ksvc", "nope", check=False)
        assert missing.returncode == 1
        assert missing.stderr == (
            'Error from server (NotFound): services.serving.knative.dev "nope" not found\n'
        )
        bad = s.cli("get", "ksvc", "-l", "a b", check=False)
        assert (bad.returncode, bad.stderr) == (1, "error: -l 'a b': cannot parse requirement "
                                                   "'a b'\n")  # fmt: skip


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_apply_and_service_update_wait_until_the_split_is_live(tmp_path: Path) -> None:
    with sluice_up(tmp_path, EXAMPLES / "hello.yaml") as s:
        s.wait_ready("hello", "hello-v1")
        s.cli("apply", "-f", str(EXAMPLES / "canary" / "1-v2-50-50.yaml"), "--wait")
        assert s.route("hello") == [("hello-v1", 50, ""), ("hello-v2", 50, "")]
        s.cli("service", "update", "hello", "--traffic", "hello-v1=20", "--traffic",
              "hello-v2=80", "--tag", "hello-v2=canary")  # fmt: skip
        assert s.route("hello") == [("hello-v1", 20, ""), ("hello-v2", 80, "canary")]
        bad = s.cli("service", "update", "hello", "--traffic", "hello-v1=20", check=False)
        assert (bad.returncode, bad.stderr) == (
            1, "error: --traffic: percents sum to 20, want 100\n")  # fmt: skip


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_apply_is_strict_names_file_and_line_and_applies_nothing(tmp_path: Path) -> None:
    hello = (EXAMPLES / "hello.yaml").read_text()
    typo = hello.replace("name: hello\n", "name: world\n", 1).replace("hello-v1", "world-v1")
    typo += "  trafic:\n    - percent: 100\n"
    batch = tmp_path / "batch.yaml"
    batch.write_text(hello + "---\n" + typo)
    line = len((hello + "---\n" + typo).splitlines()) - 1
    with sluice_up(tmp_path) as s:
        bad = s.cli("apply", "-f", str(batch), "-n", "dev", check=False)
        assert (bad.returncode, bad.stderr) == (
            1,
            f'error: {batch}:{line}: unknown field "trafic" (did you mean "traffic"?): '
            "spec.trafic\n",
        )
        assert s.cli("get", "ksvc", "-A").stderr == "No resources found\n"

        ignored = tmp_path / "ignored.yaml"
        ignored.write_text(hello.replace("    spec:\n", "    spec:\n      serviceAccountName: r\n"))
        ok = s.cli("apply", "-f", str(ignored), "-n", "dev")
        assert ok.stderr == (
            f"Warning: {ignored}:12: ignored by sluice (sluice has no service accounts): "
            "spec.template.spec.serviceAccountName\n"
        )
        assert "hello" in s.cli("get", "ksvc", "-n", "dev").stdout
