"""Sluice's activator in a real Knative control plane: what a user sees (issue "Kubernetes mode").

Real components: etcd, kube-apiserver (RBAC on), Knative v1.23.0's controller and autoscaler,
Sluice's activator as a process authenticated with a service account's token, revision pods
run by the fake node with Sluice's queue-proxy under the environment Knative's controller
wrote into the pod template. Requests go to the activator as Knative's ingress sends them:
with ``Knative-Serving-Namespace``/``-Revision`` headers, or (ingress mode) by Host.

Manifests spell out every field Knative's defaulting webhook would add (no webhook runs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.activator import ActivatorProc, Load, grant, request
from tests.kube.cluster import KubeCluster
from tests.kube.conftest import TEST_APP_IMAGE
from tests.kube.kubelet import FakeNode, QueueProxy

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
INGRESS_CLASS = "sluice.ingress.networking.knative.dev"
#: The main activator's address; the pods live in 127.0.20.0/22.
ACTIVATOR_IP = "127.0.30.1"
APP_PORT = 8081  # 8080 is the autoscaler's stat server on this machine
READY_SECONDS = 90.0


def knative_service(
    name: str,
    namespace: str,
    *,
    annotations: dict[str, str] | None = None,
    revision: str | None = None,
    cc: int = 0,
    traffic: list[dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Knative Service with the webhook's defaults written out, routed by Sluice's ingress."""
    # Target burst capacity -1 keeps the activator in the path at every scale, as it must be
    # here: the KPA's own check that it is (a probe of the public Service's DNS name) cannot
    # work without cluster DNS, and with -1 Knative skips it.
    template_meta: dict[str, Any] = {
        "annotations": {
            "autoscaling.knative.dev/target-burst-capacity": "-1",
            **(annotations or {}),
        }
    }
    if revision is not None:
        template_meta["name"] = revision
    container: dict[str, Any] = {
        "name": "user-container",
        "image": TEST_APP_IMAGE,
        "ports": [{"containerPort": APP_PORT, "name": "http1"}],
        "readinessProbe": {"successThreshold": 1, "tcpSocket": {"port": 0}},
        "resources": {},
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"networking.knative.dev/ingress.class": INGRESS_CLASS},
        },
        "spec": {
            "template": {
                "metadata": template_meta,
                "spec": {
                    "containerConcurrency": cc,
                    "timeoutSeconds": 120,
                    "enableServiceLinks": False,
                    "containers": [container],
                },
            },
            "traffic": traffic or [{"latestRevision": True, "percent": 100}],
        },
    }


def condition(obj: dict[str, Any], type_: str) -> str:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return str(cond["status"])
    return "Absent"


def apply(cluster: KubeCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj))


def wait_ready(cluster: KubeCluster, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return cluster.wait_for(
        kind, namespace, name, lambda o: condition(o, "Ready") == "True", READY_SECONDS, "Ready"
    )


def revision_headers(namespace: str, revision: str) -> dict[str, str]:
    """What Knative's ingress sets on every split it sends to the activator."""
    return {"Knative-Serving-Namespace": namespace, "Knative-Serving-Revision": revision}


@pytest.fixture(scope="session")
def ingress_role(kube_cluster: KubeCluster) -> str:
    """The ClusterRole of deploy/kubernetes/ingress, applied as the operator would."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/ingress/rbac.yaml").read_text()))
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    apply(kube_cluster, role)
    return str(role["metadata"]["name"])


@pytest.fixture(scope="session")
def activator(
    kube_cluster: KubeCluster, fake_node: FakeNode, ingress_role: str
) -> Iterator[ActivatorProc]:
    """The cluster's activator (ingress mode), listed in ``activator-service``'s Endpoints."""
    grant(kube_cluster, "sluice-activator", [ingress_role])
    proc = ActivatorProc(
        kube_cluster,
        ACTIVATOR_IP,
        "sluice-activator",
        # Ingress mode ignores the split headers of untrusted clients (issue 15); the tests
        # also play Knative's ingress, from loopback.
        ("--ingress-class", INGRESS_CLASS, "--trust-routing-headers-from", "127.0.0.0/8"),
        pod_name="activator-main",
    ).start()
    try:
        fake_node.set_activator_endpoints([ACTIVATOR_IP])
        proc.wait_ready()
        yield proc
    finally:
        fake_node.set_activator_endpoints([])
        proc.stop()


@pytest.fixture
def namespace(kube_namespace: str, fake_node: FakeNode) -> str:
    """A test namespace whose pods run Sluice's queue-proxy (several pods may run at once)."""
    fake_node.set_queue_proxy(kube_namespace, QueueProxy.sluice(SLUICE_DRAIN_QUIET_SECONDS="1"))
    return kube_namespace


# ---------------------------------------------------------------------------------- 1


def test_applied_service_becomes_reachable_through_the_activator(
    kube_cluster: KubeCluster, activator: ActivatorProc, namespace: str
) -> None:
    apply(
        kube_cluster,
        knative_service("hello", namespace, annotations={"autoscaling.knative.dev/min-scale": "1"}),
    )
    wait_ready(kube_cluster, "Revision", namespace, "hello-00001")
    # As the ingress sends it: the split headers name the revision.
    status, body = request(ACTIVATOR_IP, "/", revision_headers(namespace, "hello-00001"))
    assert (status, body.split(" in ")[0]) == (200, "hello from hello-00001")
    # Ingress mode: the Route is Ready because the activator marked its Ingress Ready, and
    # the cluster-local host routes through the activator alone.
    ksvc = wait_ready(kube_cluster, "KService", namespace, "hello")
    assert ksvc["status"]["url"].startswith("http://hello.")
    host = f"hello.{namespace}.svc.cluster.local"
    status, body = request(ACTIVATOR_IP, "/", {"Host": host})
    assert (status, body.split(" in ")[0]) == (200, "hello from hello-00001"), body
    # An unknown revision is Knative's 404, with nothing held and no poke.
    status, body = request(ACTIVATOR_IP, "/", revision_headers(namespace, "nope-00001"))
    assert status == 404 and 'revision.serving.knative.dev "nope-00001" not found' in body


# ---------------------------------------------------------------------------------- 2


def test_scale_from_zero_loses_no_request(
    kube_cluster: KubeCluster, fake_node: FakeNode, activator: ActivatorProc, namespace: str
) -> None:
    apply(
        kube_cluster,
        knative_service(
            "sleepy",
            namespace,
            annotations={
                "autoscaling.knative.dev/min-scale": "0",
                "autoscaling.knative.dev/initial-scale": "0",
            },
        ),
    )
    kube_cluster.wait_for(
        "Deployment",
        namespace,
        "sleepy-00001-deployment",
        lambda d: d["spec"].get("replicas") == 0,
        READY_SECONDS,
        "at zero",
    )
    assert not fake_node.pods(namespace, "sleepy-00001")
    load = Load(
        ACTIVATOR_IP, revision_headers(namespace, "sleepy-00001"), workers=20, count=100
    ).start()
    load.wait(120)
    assert load.total == 100 and load.failed == 0, load.summary()
    # The poke reached the real autoscaler over the websocket, and the KPA scaled 0 -> 1.
    deployment = kube_cluster.api.get("Deployment", namespace, "sleepy-00001-deployment")
    assert deployment["spec"]["replicas"] >= 1
    assert load.bodies == {"hello from sleepy-00001": 100}


# ---------------------------------------------------------------------------------- 3


def test_a_90_10_split_holds_within_two_points(
    kube_cluster: KubeCluster, activator: ActivatorProc, namespace: str
) -> None:
    min1 = {"autoscaling.knative.dev/min-scale": "1"}
    apply(kube_cluster, knative_service("split", namespace, annotations=min1, revision="split-a"))
    wait_ready(kube_cluster, "Revision", namespace, "split-a")
    traffic = [
        {"revisionName": "split-a", "percent": 90},
        {"revisionName": "split-b", "percent": 10},
    ]
    apply(
        kube_cluster,
        knative_service(
            "split",
            namespace,
            annotations=min1,
            revision="split-b",
            traffic=traffic,
            env={"VERSION": "b"},
        ),
    )
    wait_ready(kube_cluster, "Revision", namespace, "split-b")
    route = kube_cluster.wait_for(
        "Route",
        namespace,
        "split",
        lambda r: (
            condition(r, "Ready") == "True" and len(r.get("status", {}).get("traffic", [])) == 2
        ),
        READY_SECONDS,
        "Ready with the 90/10 split",
    )
    assert [t["percent"] for t in route["status"]["traffic"]] == [90, 10]
    host = {"Host": f"split.{namespace}.svc.cluster.local"}
    load = Load(ACTIVATOR_IP, host, workers=8, count=5000).start().wait(240)
    assert load.failed == 0, load.summary()
    share_a = load.bodies["hello from split-a"] / load.total
    assert 0.88 <= share_a <= 0.92, load.summary()
    assert load.bodies["hello from split-a"] + load.bodies["hello from split-b"] == 5000


# ---------------------------------------------------------------------------------- 4


def test_pod_churn_under_load_fails_no_request(
    kube_cluster: KubeCluster, fake_node: FakeNode, activator: ActivatorProc, namespace: str
) -> None:
    """A rollout under load: the new revision's pod is added to the Endpoints, then the old
    revision's three pods are removed from them and stopped, all while requests flow."""
    apply(
        kube_cluster,
        knative_service(
            "churn",
            namespace,
            annotations={"autoscaling.knative.dev/min-scale": "3"},
            revision="churn-a",
        ),
    )
    wait_ready(kube_cluster, "Revision", namespace, "churn-a")
    wait_ready(kube_cluster, "Route", namespace, "churn")
    fake_node.wait_for_pods(
        lambda ps: (
            sum(
                1
                for p in ps
                if p.ready and p.labels.get("serving.knative.dev/revision") == "churn-a"
            )
            == 3
        ),
        READY_SECONDS,
        "three ready churn-a pods",
    )
    host = {"Host": f"churn.{namespace}.svc.cluster.local"}
    load = Load(ACTIVATOR_IP, host, path="/?sleep=0.02", workers=8).start()
    try:
        time.sleep(2)
        apply(
            kube_cluster,
            knative_service(
                "churn",
                namespace,
                annotations={"autoscaling.knative.dev/min-scale": "1"},
                revision="churn-b",
                env={"VERSION": "b"},
            ),
        )
        # All traffic moves to churn-b, then churn-a's pods leave the Endpoints and stop.
        fake_node.wait_for_pods(
            lambda ps: (
                not [
                    p
                    for p in ps
                    if p.labels.get("serving.knative.dev/revision") == "churn-a"
                    and p.namespace == namespace
                ]
            ),
            READY_SECONDS,
            "churn-a's pods gone",
        )
        time.sleep(2)
    finally:
        load.stop()
    assert load.failed == 0, load.summary()
    assert load.bodies["hello from churn-a"] > 0 and load.bodies["hello from churn-b"] > 0


# ---------------------------------------------------------------------------------- 5


def test_broken_watch_and_dropped_autoscaler_socket_recover_by_themselves(
    kube_cluster: KubeCluster, activator: ActivatorProc, namespace: str
) -> None:
    apply(
        kube_cluster,
        knative_service(
            "steady", namespace, annotations={"autoscaling.knative.dev/min-scale": "1"}
        ),
    )
    wait_ready(kube_cluster, "Revision", namespace, "steady-00001")
    load = Load(ACTIVATOR_IP, revision_headers(namespace, "steady-00001"), workers=4).start()
    try:
        # The autoscaler restarts: its websocket closes (1012), readiness follows it.
        kube_cluster.restart("autoscaler", down_seconds=3.0)
        activator.wait_until(lambda: activator.probe()[0] == 200, 60, "ready again (autoscaler)")
        assert "kn_activator_stats_conn_reachable" in activator.metrics()
        # The API server restarts: every watch breaks; resuming may meet a 410 and relist.
        kube_cluster.restart("kube-apiserver", down_seconds=3.0)
        activator.wait_until(lambda: activator.probe()[0] == 200, 90, "ready again (API)")
        # The activator still follows the cluster: a new revision is routable.
        apply(
            kube_cluster,
            knative_service(
                "steady",
                namespace,
                annotations={"autoscaling.knative.dev/min-scale": "1"},
                env={"VERSION": "2"},
            ),
        )
        wait_ready(kube_cluster, "Revision", namespace, "steady-00002")
        deadline = time.monotonic() + 30
        while True:
            status, body = request(ACTIVATOR_IP, "/", revision_headers(namespace, "steady-00002"))
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (status, body.split(" in ")[0]) == (200, "hello from steady-00002")
    finally:
        load.stop()
    assert load.total > 0 and load.failed == 0, load.summary()
    log = activator.log()
    assert "not answering" in log or "failing" in log or "reachable again" in log


# ---------------------------------------------------------------------------------- 6


def test_knatives_activator_role_is_enough(
    kube_cluster: KubeCluster, activator: ActivatorProc, namespace: str
) -> None:
    """A second activator with exactly Knative's activator service account and RBAC."""
    apply(
        kube_cluster,
        knative_service("rbac", namespace, annotations={"autoscaling.knative.dev/min-scale": "1"}),
    )
    wait_ready(kube_cluster, "Revision", namespace, "rbac-00001")
    plain = ActivatorProc(kube_cluster, "127.0.30.2", "activator", pod_name="activator-plain")
    plain.start()
    try:
        plain.wait_ready()
        status, body = request("127.0.30.2", "/", revision_headers(namespace, "rbac-00001"))
        assert (status, body.split(" in ")[0]) == (200, "hello from rbac-00001")
        assert "forbidden" not in plain.log()
    finally:
        plain.stop()


def test_a_missing_permission_is_one_clear_line(kube_cluster: KubeCluster) -> None:
    """An account that may not list endpoints: not ready, and the log says which verb on
    which resource, once per watch, however often the watch retries."""
    role = json.loads(
        kube_cluster.kubectl(
            "get", "clusterrole", "knative-serving-activator-cluster", "-o", "json"
        )
    )
    rules = [
        {**r, "resources": [x for x in r["resources"] if x != "endpoints"]} for r in role["rules"]
    ]
    apply(
        kube_cluster,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "activator-without-endpoints"},
            "rules": rules,
        },
    )
    account = "sluice-no-endpoints"
    # Knative's namespaced Role (ConfigMaps) and the ClusterRole without endpoints, only.
    grant(kube_cluster, account, ["activator-without-endpoints"])
    kube_cluster.kubectl(
        "delete", "clusterrolebinding", f"{account}-knative-serving-activator-cluster"
    )
    denied = ActivatorProc(kube_cluster, "127.0.30.3", account, pod_name="activator-denied")
    denied.start()
    try:
        expected = (
            "forbidden: cannot list endpoints in the cluster scope "
            f"(as system:serviceaccount:knative-serving:{account})"
        )
        denied.wait_until(lambda: expected in denied.log(), 60, "the forbidden line")

        def forbidden() -> list[str]:
            return [line for line in denied.log().splitlines() if "forbidden" in line]

        time.sleep(1)
        first = forbidden()
        time.sleep(3)  # several back-off retries later, not one line more
        assert forbidden() == first
        warnings = [line for line in first if " WARNING " in line]
        assert len(warnings) == 2, first  # one for each of the two Endpoints watches
        status, reason = denied.probe()
        assert status == 500 and "cannot list endpoints" in reason, reason
    finally:
        denied.stop()


# ------------------------------------------------------------------- the drop-in manifests


def test_the_activator_patch_is_accepted_by_the_real_api_server(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """deploy/kubernetes/activator on Knative's own activator Deployment, applied to the API
    server (server-side dry run: validated and admitted, not stored, so the fake node's
    ``activator-service`` Endpoints stay as the tests set them)."""
    for name in ("kustomization.yaml", "activator-patch.yaml"):
        (tmp_path / name).write_text((ROOT / "deploy/kubernetes/activator" / name).read_text())
    knative = ROOT.parent / "shared" / "knative" / "v1.23.0" / "deployments" / "activator.yaml"
    (tmp_path / "serving-core.yaml").write_text(knative.read_text())
    out = kube_cluster.kubectl(
        "apply", "-k", str(tmp_path), "--server-side", "--dry-run=server", "-o", "json"
    )
    items = json.loads(out).get("items") or [json.loads(out)]
    [deployment] = [i for i in items if i["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["command"] == ["python", "-m", "activator"]
    assert spec["serviceAccountName"] == "activator"
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_IP", "SYSTEM_NAMESPACE"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
