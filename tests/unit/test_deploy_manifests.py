"""The Kubernetes drop-in manifests: they build with kustomize on Knative's own files and
validate against the Kubernetes API schema, offline.

Knative's manifests are test data in ``../shared/knative/`` (never copied into the repo); the
kustomization expects the release's ``serving-core.yaml`` beside it, so the test lays Knative's
activator Deployment there under that name in a temporary folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT.parent / "shared" / "knative" / "v1.23.0"
DEPLOY = ROOT / "deploy" / "kubernetes"
#: The Kubernetes version whose schema the manifests are validated against.
SCHEMA_VERSION = "1.35.0"

pytestmark = [
    pytest.mark.skipif(not KNATIVE.is_dir(), reason="../shared/knative is not beside the repo"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
    pytest.mark.timeout(60),
]


def kustomize(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture
def activator_build(tmp_path: Path) -> list[dict[str, Any]]:
    for name in ("kustomization.yaml", "activator-patch.yaml"):
        shutil.copy(DEPLOY / "activator" / name, tmp_path / name)
    shutil.copy(KNATIVE / "deployments" / "activator.yaml", tmp_path / "serving-core.yaml")
    return kustomize(tmp_path)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def test_the_patch_swaps_the_program_and_keeps_knatives_contract(
    activator_build: list[dict[str, Any]],
) -> None:
    knative = container(
        list(yaml.safe_load_all((KNATIVE / "deployments/activator.yaml").read_text()))
    )
    ours = container(activator_build)
    assert ours["command"] == ["python", "-m", "activator"]
    assert "--config" not in ours.get("args", [])
    # Environment, ports and probes are Knative's, untouched.
    for env in knative["env"]:
        assert env in ours["env"]
    assert ours["ports"] == knative["ports"]
    assert {p["containerPort"] for p in ours["ports"]} >= {8012, 8013, 9090}
    assert ours["readinessProbe"] == knative["readinessProbe"]
    assert ours["livenessProbe"] == knative["livenessProbe"]
    assert ours["securityContext"]["readOnlyRootFilesystem"] is True
    assert ours["securityContext"]["runAsNonRoot"] is True
    [deployment] = [d for d in activator_build if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "activator"


def test_resources_fit_the_worker_count(activator_build: list[dict[str, Any]]) -> None:
    ours = container(activator_build)
    workers = int(ours["args"][ours["args"].index("--workers") + 1])
    cpu = ours["resources"]["limits"]["cpu"]
    assert float(cpu) >= workers  # one core per worker at saturation


def test_every_built_object_validates_against_the_kubernetes_schema(
    activator_build: list[dict[str, Any]],
) -> None:
    for doc in activator_build:
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def test_the_activator_entry_point_exists_as_the_patch_calls_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "activator", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.returncode == 0
    assert "Kubernetes mode" in out.stdout and "POD_IP" in out.stdout


def test_the_queue_proxy_patch_sets_the_sidecar_image_in_knatives_config(tmp_path: Path) -> None:
    for name in ("kustomization.yaml", "config-deployment.yaml"):
        shutil.copy(DEPLOY / "queue-proxy" / name, tmp_path / name)
    shutil.copy(KNATIVE / "configmaps" / "deployment.yaml", tmp_path / "serving-core.yaml")
    [cm] = kustomize(tmp_path)
    knative = yaml.safe_load((KNATIVE / "configmaps" / "deployment.yaml").read_text())
    assert cm["data"]["queue-sidecar-image"] == "ghcr.io/example/sluice:dev"
    assert cm["data"]["_example"] == knative["data"]["_example"]  # the rest is Knative's
    kubernetes_validate.validate(cm, SCHEMA_VERSION, strict=True)


def test_ingress_mode_adds_its_class_rbac_and_route_config(tmp_path: Path) -> None:
    for folder, names in (
        ("activator", ("kustomization.yaml", "activator-patch.yaml")),
        ("ingress", ("kustomization.yaml", "config-network.yaml", "rbac.yaml")),
    ):
        (tmp_path / folder).mkdir()
        for name in names:
            shutil.copy(DEPLOY / folder / name, tmp_path / folder / name)
    # serving-core.yaml stands for Knative's release manifest: the parts this overlay touches.
    core = [
        (KNATIVE / "deployments" / "activator.yaml").read_text(),
        (KNATIVE / "configmaps" / "network.yaml").read_text(),
    ]
    (tmp_path / "activator" / "serving-core.yaml").write_text("\n---\n".join(core))
    docs = kustomize(tmp_path / "ingress")
    args = container(docs)["args"]
    assert args[-2:] == ["--ingress-class", "sluice.ingress.networking.knative.dev"]
    [cm] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["data"]["ingress-class"] == "sluice.ingress.networking.knative.dev"
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert {"ingresses/status"} <= {r for rule in role["rules"] for r in rule["resources"]}
    for doc in docs:
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
