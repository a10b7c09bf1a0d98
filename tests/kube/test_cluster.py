"""The kube tier's infrastructure works: API server with RBAC, Knative's CRDs and control
plane, and the fake node running a revision's pod with Knative's queue-proxy.

Manifests here spell out every field Knative's defaulting webhook would add, because no
webhook runs (see :func:`knative_service`).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.kube.api import ApiError
from tests.kube.cluster import KubeCluster
from tests.kube.conftest import TEST_APP_IMAGE
from tests.kube.kubelet import FakeNode, QueueProxy
from tests.kube.podspec import PodView

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]

# 8080 is the autoscaler's stat server on this machine (fixed in Knative), so the app uses
# another port; the queue-proxy learns it from USER_PORT.
APP_PORT = 8081
READY_SECONDS = 90.0


def knative_service(name: str, namespace: str, annotations: dict[str, str]) -> dict[str, Any]:
    """A serving.knative.dev/v1 Service with the webhook's defaults written out.

    The fields the webhook would default and the reconcilers read: the container ``name``
    (``user-container``), ``readinessProbe`` (TCP on the user port, successThreshold 1),
    ``resources`` ({}), ``containerConcurrency`` (0), ``timeoutSeconds`` (300),
    ``enableServiceLinks`` (false), and ``traffic`` (100 % to the latest revision). The
    revision template's ``ports`` is ours (not 8080, see :data:`APP_PORT`).
    """
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containerConcurrency": 0,
                    "timeoutSeconds": 300,
                    "enableServiceLinks": False,
                    "containers": [
                        {
                            "name": "user-container",
                            "image": TEST_APP_IMAGE,
                            "ports": [{"containerPort": APP_PORT, "name": "http1"}],
                            "readinessProbe": {
                                "successThreshold": 1,
                                "tcpSocket": {"port": 0},
                            },
                            "resources": {},
                        }
                    ],
                },
            },
            "traffic": [{"latestRevision": True, "percent": 100}],
        },
    }


def condition(obj: dict[str, Any], type_: str) -> str:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return str(cond["status"])
    return "Absent"


def test_api_server_answers_version_with_rbac_on(kube_cluster: KubeCluster) -> None:
    version = json.loads(kube_cluster.api.raw("/version"))
    assert version["gitVersion"].startswith("v1.35."), version
    # RBAC is the authorizer: a service account with no binding may do nothing.
    if kube_cluster.api.get_or_none("ServiceAccount", "default", "nobody") is None:
        kube_cluster.api.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "nobody", "namespace": "default"},
            }
        )
    nobody = kube_cluster.api_for("nobody", "default")
    assert not nobody.can_i("list", "pods", "default")
    with pytest.raises(ApiError) as forbidden:
        nobody.list("Pod", "default")
    assert forbidden.value.status == 403


def test_knative_crds_are_served(kube_cluster: KubeCluster) -> None:
    served = {
        "/apis/serving.knative.dev/v1": {"services", "configurations", "revisions", "routes"},
        "/apis/autoscaling.internal.knative.dev/v1alpha1": {"podautoscalers", "metrics"},
        "/apis/networking.internal.knative.dev/v1alpha1": {"serverlessservices", "ingresses"},
    }
    for path, want in served.items():
        names = {r["name"] for r in json.loads(kube_cluster.api.raw(path))["resources"]}
        assert want <= names, (path, names)


def test_activator_identity_has_knatives_activator_rbac(kube_cluster: KubeCluster) -> None:
    activator = kube_cluster.api_for("activator")
    assert activator.list("Revision")["kind"] == "RevisionList"
    assert activator.list("Endpoints")["kind"] == "EndpointsList"
    assert activator.list("Service")["kind"] == "ServiceList"
    assert activator.list("ConfigMap", "knative-serving")["kind"] == "ConfigMapList"
    with pytest.raises(ApiError) as forbidden:
        activator.list("Pod")
    assert forbidden.value.status == 403
    assert not activator.can_i("update", "revisions", "default", "serving.knative.dev")
    # The kubeconfig carries the same identity for out-of-process clients.
    kubeconfig = kube_cluster.kubeconfig_for("activator")
    assert "token" in json.loads(kubeconfig.read_text())["users"][0]["user"]


def test_service_revision_becomes_ready_and_pod_answers_through_queue_proxy(
    kube_cluster: KubeCluster, fake_node: FakeNode, kube_namespace: str
) -> None:
    ksvc = knative_service("hello", kube_namespace, {"autoscaling.knative.dev/min-scale": "1"})
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(ksvc))

    revision = kube_cluster.wait_for(
        "Revision",
        kube_namespace,
        "hello-00001",
        lambda rev: condition(rev, "Ready") == "True",
        READY_SECONDS,
        "Ready=True",
    )
    assert condition(revision, "ContainerHealthy") == "True"
    assert condition(revision, "ResourcesAvailable") == "True"

    pods = fake_node.wait_for_pods(
        lambda ps: any(
            p.ready for p in ps if p.labels.get("serving.knative.dev/revision") == "hello-00001"
        ),
        10,
        "a ready hello-00001 pod",
    )
    pod = next(p for p in pods if p.ready and p.namespace == kube_namespace)
    with urllib.request.urlopen(f"http://{pod.ip}:8012/", timeout=5) as resp:
        body = resp.read().decode()
    assert resp.status == 200
    assert body == f"hello from hello-00001 in {pod.ip}\n"

    # What the node wrote is what Knative reads: the private Endpoints list the pod as ready.
    endpoints = kube_cluster.api.get("Endpoints", kube_namespace, "hello-00001-private")
    ready = [a["ip"] for s in endpoints.get("subsets", []) for a in s.get("addresses", [])]
    assert ready == [pod.ip]
    assert (
        endpoints["metadata"]["labels"]["networking.internal.knative.dev/serviceType"] == "Private"
    )


def test_fake_node_scales_a_deployment_and_keeps_endpoints(
    kube_cluster: KubeCluster, fake_node: FakeNode, kube_namespace: str
) -> None:
    """The node alone (no Knative reconciler involved): pods follow ``spec.replicas``, each
    on its own loopback address, and the Service's Endpoints follow the pods' readiness."""
    api, ns = kube_cluster.api, kube_namespace
    fake_node.set_queue_proxy(ns, QueueProxy.sluice())  # apps bind their pod's address
    labels = {"app": "manual", "serving.knative.dev/revision": "manual"}
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "manual", "namespace": ns, "labels": {"tier": "kube"}},
            "spec": {
                "selector": {"app": "manual"},
                "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
            },
        }
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "manual", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "manual"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "app",
                            "image": TEST_APP_IMAGE,
                            "env": [
                                {"name": "PORT", "value": str(APP_PORT)},
                                {"name": "K_REVISION", "value": "manual"},
                            ],
                            "ports": [{"name": "web", "containerPort": APP_PORT}],
                            "readinessProbe": {"tcpSocket": {"port": "web"}},
                        }
                    ],
                },
            },
        },
    }
    api.create(deployment)

    def mine(pods: list[PodView]) -> list[PodView]:
        return [p for p in pods if p.namespace == ns and not p.terminating]

    pods = mine(
        fake_node.wait_for_pods(lambda ps: sum(p.ready for p in mine(ps)) == 2, 30, "2 ready")
    )
    assert len({p.ip for p in pods}) == 2
    for pod in pods:
        with urllib.request.urlopen(f"http://{pod.ip}:{APP_PORT}/", timeout=5) as resp:
            assert resp.read().decode() == f"hello from manual in {pod.ip}\n"
    kube_cluster.wait_for(
        "Deployment", ns, "manual", lambda d: d.get("status", {}).get("readyReplicas") == 2, 10
    )
    endpoints = kube_cluster.wait_for(
        "Endpoints",
        ns,
        "manual",
        lambda e: len(e.get("subsets", [{}])[0].get("addresses", [])) == 2,
        10,
    )
    assert endpoints["metadata"]["labels"] == {"tier": "kube"}
    assert endpoints["subsets"][0]["ports"] == [
        {"name": "http", "port": APP_PORT, "protocol": "TCP"}
    ]

    api.patch("Deployment", ns, "manual", {"spec": {"replicas": 0}})
    fake_node.wait_for_pods(lambda ps: not [p for p in ps if p.namespace == ns], 30, "no pods")
    for pod in pods:
        assert api.get_or_none("Pod", ns, pod.name) is None
    kube_cluster.wait_for("Endpoints", ns, "manual", lambda e: not e.get("subsets"), 10)
    status = kube_cluster.wait_for(
        "Deployment",
        ns,
        "manual",
        lambda d: d["status"].get("observedGeneration") == 2 and not d["status"].get("replicas"),
        10,
    )["status"]
    assert condition({"status": status}, "Available") == "True"


def test_activator_endpoints_helper_writes_knatives_activator_service(
    kube_cluster: KubeCluster, fake_node: FakeNode
) -> None:
    fake_node.set_activator_endpoints(["127.0.0.77"])
    try:
        endpoints = kube_cluster.api.get("Endpoints", "knative-serving", "activator-service")
        (subset,) = endpoints["subsets"]
        assert [a["ip"] for a in subset["addresses"]] == ["127.0.0.77"]
        assert {p["name"]: p["port"] for p in subset["ports"]}["http"] == 8012
    finally:
        fake_node.set_activator_endpoints([])
    assert not kube_cluster.api.get("Endpoints", "knative-serving", "activator-service").get(
        "subsets"
    )
