"""Decoders of the objects the activator watches: realistic shapes, defaults, malformed input."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from activator.kube.objects import (
    PRIVATE_ENDPOINTS_SELECTOR,
    PUBLIC_ENDPOINTS_SELECTOR,
    SERVING_PORT_NAMES,
    DecodeError,
    EndpointsInfo,
    RevisionInfo,
    child_name,
    decode_configmap,
    decode_endpoints,
    decode_revision,
    decode_service,
    private_service_name,
)

# A Revision as Knative v1.23's controller writes it (webhook defaults applied).
REVISION: dict[str, Any] = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Revision",
    "metadata": {
        "name": "hello-00001",
        "namespace": "default",
        "uid": "0d3b5b8e-2f4c-4b57-9d2a-8a7e0a5f1c11",
        "resourceVersion": "123456",
        "generation": 1,
        "labels": {
            "serving.knative.dev/configuration": "hello",
            "serving.knative.dev/configurationGeneration": "1",
            "serving.knative.dev/configurationUID": "6c1b9a7e-7c1e-4d51-9b9e-0e1f2a3b4c5d",
            "serving.knative.dev/routingState": "active",
            "serving.knative.dev/service": "hello",
            "serving.knative.dev/serviceUID": "1a2b3c4d-0000-4000-8000-1234567890ab",
        },
        "annotations": {
            "autoscaling.knative.dev/target": "10",
            "serving.knative.dev/creator": "admin",
            "serving.knative.dev/routes": "hello",
        },
        "ownerReferences": [
            {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Configuration",
                "name": "hello",
                "uid": "6c1b9a7e-7c1e-4d51-9b9e-0e1f2a3b4c5d",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    },
    "spec": {
        "containerConcurrency": 10,
        "timeoutSeconds": 300,
        "enableServiceLinks": False,
        "containers": [
            {
                "name": "user-container",
                "image": "ghcr.io/knative/helloworld-go@sha256:abcd",
                "env": [{"name": "TARGET", "value": "Sluice"}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"successThreshold": 1, "tcpSocket": {"port": 0}},
                "resources": {},
            }
        ],
    },
    "status": {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "user-container", "imageDigest": "sha256:abcd"}],
    },
}

# The private Endpoints of that revision: two pods, one not ready, plus the metrics port.
PRIVATE_ENDPOINTS: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Endpoints",
    "metadata": {
        "name": "hello-00001-private",
        "namespace": "default",
        "resourceVersion": "123470",
        "labels": {
            "app": "hello-00001",
            "networking.internal.knative.dev/serverlessservice": "hello-00001",
            "networking.internal.knative.dev/serviceType": "Private",
            "serving.knative.dev/configuration": "hello",
            "serving.knative.dev/revision": "hello-00001",
            "serving.knative.dev/revisionUID": "0d3b5b8e-2f4c-4b57-9d2a-8a7e0a5f1c11",
            "serving.knative.dev/service": "hello",
        },
    },
    "subsets": [
        {
            "addresses": [
                {
                    "ip": "10.244.0.17",
                    "nodeName": "kind-control-plane",
                    "targetRef": {"kind": "Pod", "name": "hello-00001-deployment-abc"},
                }
            ],
            "notReadyAddresses": [{"ip": "10.244.0.18"}],
            "ports": [
                {"name": "http-queueadm", "port": 8022, "protocol": "TCP"},
                {"name": "http-autometric", "port": 9090, "protocol": "TCP"},
                {"name": "http-usermetric", "port": 9091, "protocol": "TCP"},
                {"name": "http", "port": 8012, "protocol": "TCP"},
                {"name": "https", "port": 8112, "protocol": "TCP"},
            ],
        }
    ],
}


def test_revision_projection_reads_only_what_the_activator_uses() -> None:
    assert decode_revision(REVISION) == RevisionInfo(
        namespace="default",
        name="hello-00001",
        container_concurrency=10,
        timeout_seconds=300,
        protocol="http1",
        service="hello",
        configuration="hello",
    )
    info = decode_revision(REVISION)
    assert info.key == ("default", "hello-00001")
    assert info.port_name == "http"
    assert info.probe_optimisation


def test_revision_defaults_when_optional_fields_are_absent() -> None:
    rev = {"metadata": {"name": "r", "namespace": "ns"}, "spec": {"containers": [{}]}}
    info = decode_revision(rev)
    assert (info.container_concurrency, info.timeout_seconds) == (0, 300)
    assert (info.response_start_timeout_seconds, info.idle_timeout_seconds) == (0, 0)
    assert (info.protocol, info.service, info.http_full_duplex) == ("http1", "", False)


def test_revision_timeouts_and_full_duplex_annotation() -> None:
    rev = copy.deepcopy(REVISION)
    rev["spec"].update(timeoutSeconds=600, responseStartTimeoutSeconds=30, idleTimeoutSeconds=60)
    rev["metadata"]["annotations"]["features.knative.dev/http-full-duplex"] = "enabled"
    info = decode_revision(rev)
    assert (info.timeout_seconds, info.response_start_timeout_seconds) == (600, 30)
    assert info.idle_timeout_seconds == 60
    assert info.http_full_duplex


def test_h2c_protocol_comes_from_the_serving_containers_first_port_name() -> None:
    rev = copy.deepcopy(REVISION)
    sidecar = {"name": "sidecar", "image": "envoy"}
    rev["spec"]["containers"] = [
        sidecar,
        {"name": "user", "ports": [{"name": "h2c", "containerPort": 8080}]},
    ]
    info = decode_revision(rev)
    assert (info.protocol, info.port_name) == ("h2c", "http2")
    rev["spec"]["containers"][1]["ports"][0]["name"] = "http1"
    assert decode_revision(rev).protocol == "http1"


def test_exec_readiness_or_startup_probe_turns_probe_optimisation_off() -> None:
    rev = copy.deepcopy(REVISION)
    rev["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["/ready"]}}
    info = decode_revision(rev)
    assert info.exec_readiness_probe and not info.probe_optimisation
    rev = copy.deepcopy(REVISION)
    rev["spec"]["containers"][0]["startupProbe"] = {"httpGet": {"path": "/up"}}
    info = decode_revision(rev)
    assert info.startup_probe and not info.probe_optimisation


def test_startup_probe_on_a_sidecar_does_not_count() -> None:
    # Knative v1.23 looks at GetContainer() only: the container with ports.
    rev = copy.deepcopy(REVISION)
    rev["spec"]["containers"].append({"name": "side", "startupProbe": {"exec": {}}})
    assert decode_revision(rev).probe_optimisation


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["spec"].update(containerConcurrency="ten"), "spec.containerConcurrency"),
        (lambda r: r["spec"].update(containerConcurrency=-1), "spec.containerConcurrency"),
        (lambda r: r["spec"].update(timeoutSeconds=True), "spec.timeoutSeconds"),
        (lambda r: r["spec"].update(containers={"name": "x"}), "spec.containers: expected a list"),
        (lambda r: r["metadata"].pop("name"), "metadata.name: missing"),
        (lambda r: r["metadata"].update(labels=["a"]), "metadata.labels: expected an object"),
        (lambda r: r.update(spec=[]), "spec: expected an object"),
    ],
)
def test_malformed_revision_is_one_line_naming_the_field(mutate: Any, message: str) -> None:
    rev = copy.deepcopy(REVISION)
    mutate(rev)
    with pytest.raises(DecodeError) as err:
        decode_revision(rev)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_private_endpoints_to_ready_and_not_ready_dests() -> None:
    info = decode_endpoints(PRIVATE_ENDPOINTS)
    assert (info.revision, info.service_type) == ("hello-00001", "Private")
    assert info.dests("http") == (frozenset({"10.244.0.17:8012"}), frozenset({"10.244.0.18:8012"}))
    assert info.dests("http2") == (frozenset(), frozenset())
    assert info.dests("http-autometric")[0] == frozenset({"10.244.0.17:9090"})
    assert info.ready_ips("http") == frozenset({"10.244.0.17"})


def test_endpoints_port_filter_keeps_only_the_serving_ports() -> None:
    info = decode_endpoints(PRIVATE_ENDPOINTS, port_names=SERVING_PORT_NAMES)
    assert set(info.ports) == {"http"}
    assert info.dests("http") == decode_endpoints(PRIVATE_ENDPOINTS).dests("http")


def test_endpoints_ipv6_bracketed_and_subsets_merged() -> None:
    ep = {
        "metadata": {"name": "activator-service", "namespace": "knative-serving"},
        "subsets": [
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"name": "http", "port": 8012}]},
            {
                "addresses": [{"ip": "10.0.0.2"}],
                "ports": [{"name": "http", "port": 8013}, {"name": "http", "port": 9999}],
            },
            {"addresses": [{"ip": "10.0.0.3"}], "ports": [{"name": "metrics", "port": 9090}]},
        ],
    }
    info = decode_endpoints(ep)
    ready, not_ready = info.dests("http")
    assert ready == frozenset({"[fd00::1]:8012", "10.0.0.2:8013"})  # first "http" port per subset
    assert not_ready == frozenset()
    assert info.ready_ips("http") == frozenset({"fd00::1", "10.0.0.2"})


def test_endpoints_without_subsets_is_empty() -> None:
    info = decode_endpoints({"metadata": {"name": "x-private", "namespace": "ns"}})
    assert info == EndpointsInfo("ns", "x-private")
    assert info.dests("http") == (frozenset(), frozenset())


def test_equal_endpoints_project_equal_so_no_event_is_due() -> None:
    touched = copy.deepcopy(PRIVATE_ENDPOINTS)
    touched["metadata"]["resourceVersion"] = "999999"
    touched["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": "x"}
    touched["subsets"][0]["addresses"][0]["nodeName"] = "other-node"
    assert decode_endpoints(touched) == decode_endpoints(PRIVATE_ENDPOINTS)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(subsets={}), "subsets: expected a list"),
        (lambda e: e["subsets"][0]["addresses"][0].pop("ip"), "subsets[0].addresses[0].ip"),
        (lambda e: e["subsets"][0]["ports"][3].update(port="x"), "subsets[0].ports[3].port"),
        (lambda e: e["subsets"][0]["ports"][3].pop("port"), "subsets[0].ports[3].port: missing"),
        (lambda e: e["subsets"][0].update(notReadyAddresses=[7]), "notReadyAddresses[0]"),
    ],
)
def test_malformed_endpoints_is_one_line_naming_the_field(mutate: Any, message: str) -> None:
    ep = copy.deepcopy(PRIVATE_ENDPOINTS)
    mutate(ep)
    with pytest.raises(DecodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_endpoints(ep)


def test_private_service_cluster_ip_dest() -> None:
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hello-00001-private", "namespace": "default"},
        "spec": {
            "clusterIP": "10.96.12.34",
            "clusterIPs": ["10.96.12.34"],
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8012},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8112},
                {"name": "http-autometric", "port": 9090, "targetPort": "http-autometric"},
            ],
            "type": "ClusterIP",
        },
    }
    info = decode_service(svc)
    assert info.dest("http") == "10.96.12.34:80"
    assert info.dest("http2") is None
    svc["spec"]["clusterIP"] = "None"
    assert decode_service(svc).dest("http") is None


def test_configmap_data() -> None:
    cm = {
        "metadata": {"name": "config-network", "namespace": "knative-serving"},
        "data": {"mesh-compatibility-mode": "auto", "_example": "long text"},
    }
    info = decode_configmap(cm)
    assert info.data["mesh-compatibility-mode"] == "auto"
    with pytest.raises(DecodeError, match=r"data\[x\]: expected a string"):
        decode_configmap({"metadata": {"name": "c"}, "data": {"x": 1}})


def test_label_selectors_match_knatives_informer_filters() -> None:
    assert PRIVATE_ENDPOINTS_SELECTOR == (
        "networking.internal.knative.dev/serviceType=Private,serving.knative.dev/revisionUID"
    )
    assert PUBLIC_ENDPOINTS_SELECTOR == "networking.internal.knative.dev/serviceType=Public"


def test_child_name_short_and_hashed() -> None:
    assert private_service_name("hello-00001") == "hello-00001-private"
    exact = "a" * 55  # 55 + 8 = 63 still fits
    assert private_service_name(exact) == exact + "-private"
    parent = "helloworld-go-with-a-very-long-name-that-needs-hashing-00001"
    name = private_service_name(parent)
    assert name == "helloworld-go-with-a-ve53f36204bd7554f7642c46b842b071f3-private"
    assert name == parent[:23] + hashlib.md5(parent.encode()).hexdigest() + "-private"
    assert len(name) == 63


def test_child_name_with_a_suffix_too_long_to_keep() -> None:
    name = child_name("p" * 40, "-" + "s" * 35)
    assert len(name) == 63
    assert name.startswith("p" * 31)
