"""KIngress (ingress mode): decoding Knative's Ingress and routing by its rules."""

from __future__ import annotations

import random
from typing import Any

import pytest

from activator.kube.ingress import (
    SLUICE_INGRESS_CLASS,
    decode_ingress,
    host_rules,
    ready_status,
)
from activator.kube.objects import DecodeError
from activator.model import Revision, RoutingConfig
from activator.routing import RouteTable


def split(rev: str, percent: int) -> dict[str, Any]:
    return {
        "serviceName": rev,
        "serviceNamespace": "default",
        "servicePort": 80,
        "percent": percent,
        "appendHeaders": {
            "Knative-Serving-Revision": rev,
            "Knative-Serving-Namespace": "default",
        },
    }


def kingress(cls: str = SLUICE_INGRESS_CLASS, generation: int = 2) -> dict[str, Any]:
    """The shape Knative's route controller writes for a 90/10 route with tag ``canary``
    and tag-header routing on (pkg/reconciler/route/resources/ingress.go)."""
    hosts = ["hello.default", "hello.default.svc", "hello.default.svc.cluster.local"]
    return {
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "metadata": {
            "name": "hello",
            "namespace": "default",
            "generation": generation,
            "annotations": {"networking.knative.dev/ingress.class": cls},
        },
        "spec": {
            "httpOption": "Enabled",
            "rules": [
                {
                    "hosts": hosts,
                    "visibility": "ClusterLocal",
                    "http": {
                        "paths": [
                            {
                                "headers": {"Knative-Serving-Tag": {"exact": "canary"}},
                                "splits": [split("hello-00002", 100)],
                                "appendHeaders": {"Knative-Serving-Tag": "canary"},
                            },
                            {
                                "splits": [split("hello-00001", 90), split("hello-00002", 10)],
                                "appendHeaders": {"Knative-Serving-Default-Route": "true"},
                            },
                        ]
                    },
                },
                {
                    "hosts": ["canary-hello.default.svc.cluster.local"],
                    "visibility": "ClusterLocal",
                    "http": {
                        "paths": [
                            {
                                "splits": [split("hello-00002", 100)],
                                "appendHeaders": {"Knative-Serving-Tag": "canary"},
                            }
                        ]
                    },
                },
            ],
        },
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def table_with(obj: dict[str, Any]) -> RouteTable:
    info = decode_ingress(obj, SLUICE_INGRESS_CLASS)
    assert info is not None
    table = RouteTable.build(RoutingConfig())
    for name in ("hello-00001", "hello-00002"):
        table.put_revision(Revision(name, "default"))
    table.put_rules(info.key, host_rules(info))
    return table


def test_another_class_is_not_ours() -> None:
    assert (
        decode_ingress(kingress(cls="kourier.ingress.networking.knative.dev"), SLUICE_INGRESS_CLASS)
        is None
    )


def test_status_of_an_older_generation_is_not_ready() -> None:
    info = decode_ingress(kingress(), SLUICE_INGRESS_CLASS)
    assert info is not None and info.generation == 2 and not info.ready
    status = ready_status(info, "activator-service.knative-serving.svc.cluster.local")["status"]
    assert status["observedGeneration"] == 2
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "LoadBalancerReady",
        "NetworkConfigured",
    }
    assert status["privateLoadBalancer"]["ingress"][0]["domainInternal"].startswith("activator")


def test_weighted_split_follows_the_percents() -> None:
    table = table_with(kingress())
    rng = random.Random(7)
    picks = [
        table.resolve("hello.default.svc.cluster.local:80", None, rng.random) for _ in range(10_000)
    ]
    share = sum(1 for p in picks if p is not None and p.revision == "hello-00001") / len(picks)
    assert 0.88 < share < 0.92
    first = picks[0]
    assert first is not None
    # The split headers travel as fields; the path's own header is set upstream.
    assert first.set_headers == (("Knative-Serving-Default-Route", "true"),)


def test_tag_header_and_tag_host_pick_the_tagged_revision() -> None:
    table = table_with(kingress())
    by_header = table.resolve("hello.default", "canary", random.random)
    by_host = table.resolve("canary-hello.default.svc.cluster.local", None, random.random)
    assert by_header is not None and by_header.revision == "hello-00002"
    assert by_host is not None and by_host.revision == "hello-00002"
    assert by_host.set_headers == (("Knative-Serving-Tag", "canary"),)
    assert table.resolve("hello.default", "nope", lambda: 0.0).revision == "hello-00001"  # type: ignore[union-attr]


def test_rules_change_in_place_and_go_away() -> None:
    table = table_with(kingress())
    obj = kingress(generation=3)
    obj["spec"]["rules"][0]["http"]["paths"][1]["splits"] = [split("hello-00002", 100)]
    info = decode_ingress(obj, SLUICE_INGRESS_CLASS)
    assert info is not None
    table.put_rules(info.key, host_rules(info))
    assert table.resolve("hello.default", None, lambda: 0.0).revision == "hello-00002"  # type: ignore[union-attr]
    table.remove_rules(info.key)
    assert table.resolve("hello.default", None, lambda: 0.0) is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o["spec"]["rules"][0]["http"]["paths"][1].update(splits=[]), "splits: empty"),
        (
            lambda o: o["spec"]["rules"][0]["http"]["paths"][1]["splits"][0].update(percent=101),
            "percent: expected an integer",
        ),
        (
            lambda o: o["spec"]["rules"][0]["http"]["paths"][0].update(
                headers={"X-User": {"exact": "a"}}
            ),
            "headers.X-User: only an exact Knative-Serving-Tag",
        ),
        (lambda o: o["spec"].update(rules={"a": 1}), "spec.rules: expected a list"),
        (
            lambda o: o["spec"]["rules"][0]["http"]["paths"][1].update(path="/api"),
            r"paths\[1\]\.path: only the whole host",
        ),
        (
            lambda o: o["spec"]["rules"][0]["http"]["paths"][1].update(rewriteHost="x.example"),
            "rewriteHost: not supported",
        ),
    ],
)
def test_malformed_ingress_names_the_field(mutate: Any, message: str) -> None:
    obj = kingress()
    mutate(obj)
    with pytest.raises(DecodeError, match=message):
        decode_ingress(obj, SLUICE_INGRESS_CLASS)
