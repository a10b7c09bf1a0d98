"""``python -m bench.kube_client``: thin aiohttp client vs kubernetes-asyncio, measured.

Two costs decide which Kubernetes client the activator carries:

* **import RSS**: a fresh interpreter's resident memory after importing what the activator
  would import, minus before (median of three runs). ``aiohttp`` alone is shown for
  reference, since the activator loads it either way.
* **µs per decoded watch event**: one realistic watch line (a MODIFIED Endpoints of a revision
  with 10 pods, a MODIFIED Revision, both with the ``managedFields`` the API server sends) turned
  into the activator's projection. Thin: ``json.loads`` + the decoder. kubernetes-asyncio:
  its ``Watch.unmarshal_event`` (which parses, re-serialises and deserialises into generated
  models for built-in kinds; custom resources such as Revisions stay dicts) + the projection
  read from the model. Process CPU time (the machine is shared, so not wall time), best
  of five runs of ``--events`` decodes. The thin row also shows the Endpoints decoder keeping
  only the serving ports (``port_names=SERVING_PORT_NAMES``), as the activator would.

kubernetes-asyncio is not a Sluice dependency: install it somewhere apart
(``pip install --target /tmp/kasync kubernetes_asyncio``) and pass ``--kubernetes-asyncio
/tmp/kasync``; without it its rows say "not installed".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from activator.kube.client import parse_event
from activator.kube.objects import (
    SERVING_PORT_NAMES,
    EndpointsInfo,
    decode_endpoints,
    decode_revision,
    join_host_port,
)

__all__ = ["endpoints_object", "main", "revision_object", "watch_line"]

_RSS_PROBE = """
import os, sys, json
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
before = rss()
for name in sys.argv[1].split(','):
    __import__(name)
print(json.dumps({'before': before, 'after': rss()}))
"""

CANDIDATES: dict[str, list[str]] = {
    "aiohttp alone (reference)": ["aiohttp"],
    "thin: activator.kube on aiohttp": [
        "activator.kube.client",
        "activator.kube.reflector",
        "activator.kube.objects",
        "activator.kube.config",
    ],
    "kubernetes_asyncio": [
        "kubernetes_asyncio.client",
        "kubernetes_asyncio.config",
        "kubernetes_asyncio.watch",
    ],
}


def _managed_fields(manager: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "manager": manager,
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-12-03T09:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }
    ]


def endpoints_object(i: int, pods: int = 10) -> dict[str, Any]:
    """A revision's private Endpoints as the API server sends it, ``pods`` ready pods."""
    rev = f"svc{i}-00001"
    addresses = [
        {
            "ip": f"10.{(i >> 8) & 255}.{i & 255}.{p + 1}",
            "nodeName": f"node-{p % 3}",
            "targetRef": {
                "kind": "Pod",
                "namespace": "default",
                "name": f"{rev}-deployment-5d8f7c9b4-{p:05d}",
                "uid": f"00000000-0000-4000-8000-{i:06d}{p:06d}",
            },
        }
        for p in range(pods)
    ]
    ports = [
        {"name": name, "port": port, "protocol": "TCP"}
        for name, port in (
            ("http-queueadm", 8022),
            ("http-autometric", 9090),
            ("http-usermetric", 9091),
            ("http", 8012),
            ("https", 8112),
        )
    ]
    return {
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": {
            "name": f"{rev}-private",
            "namespace": "default",
            "uid": f"11111111-0000-4000-8000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-12-03T09:00:00Z",
            "labels": {
                "app": rev,
                "networking.internal.knative.dev/serverlessservice": rev,
                "networking.internal.knative.dev/serviceType": "Private",
                "serving.knative.dev/configuration": f"svc{i}",
                "serving.knative.dev/configurationGeneration": "1",
                "serving.knative.dev/revision": rev,
                "serving.knative.dev/revisionUID": f"22222222-0000-4000-8000-{i:012d}",
                "serving.knative.dev/service": f"svc{i}",
            },
            "annotations": {
                "endpoints.kubernetes.io/last-change-trigger-time": "2026-12-03T09:00:00Z"
            },
            "managedFields": _managed_fields(
                "kube-controller-manager",
                {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:subsets": {}},
            ),
        },
        "subsets": [{"addresses": addresses, "ports": ports}],
    }


def revision_object(i: int) -> dict[str, Any]:
    """A Revision as Knative v1.23's controller leaves it, status included."""
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": f"svc{i}-00001",
            "namespace": "default",
            "uid": f"22222222-0000-4000-8000-{i:012d}",
            "resourceVersion": str(5000 + i),
            "generation": 1,
            "creationTimestamp": "2026-12-03T09:00:00Z",
            "labels": {
                "serving.knative.dev/configuration": f"svc{i}",
                "serving.knative.dev/configurationGeneration": "1",
                "serving.knative.dev/configurationUID": "33333333-0000-4000-8000-000000000000",
                "serving.knative.dev/routingState": "active",
                "serving.knative.dev/service": f"svc{i}",
                "serving.knative.dev/serviceUID": "44444444-0000-4000-8000-000000000000",
            },
            "annotations": {
                "autoscaling.knative.dev/target": "10",
                "serving.knative.dev/creator": "kubernetes-admin",
                "serving.knative.dev/routes": f"svc{i}",
                "serving.knative.dev/routingStateModified": "2026-12-03T09:00:00Z",
            },
            "ownerReferences": [
                {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Configuration",
                    "name": f"svc{i}",
                    "uid": "33333333-0000-4000-8000-000000000000",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": _managed_fields(
                "controller", {"f:metadata": {"f:labels": {}}, "f:spec": {}, "f:status": {}}
            ),
        },
        "spec": {
            "containerConcurrency": 10,
            "timeoutSeconds": 300,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "user-container",
                    "image": "ghcr.io/knative/helloworld-go@sha256:" + "a" * 64,
                    "env": [{"name": "TARGET", "value": "Sluice"}],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"successThreshold": 1, "tcpSocket": {"port": 0}},
                    "resources": {"limits": {"cpu": "1", "memory": "256Mi"}},
                }
            ],
        },
        "status": {
            "observedGeneration": 1,
            "actualReplicas": 1,
            "desiredReplicas": 1,
            "containerStatuses": [
                {"name": "user-container", "imageDigest": "ghcr.io/knative/helloworld-go@sha256:"}
            ],
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-12-03T09:00:00Z"}
                for t in ("Active", "ContainerHealthy", "Ready", "ResourcesAvailable")
            ],
        },
    }


def watch_line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def import_rss(modules: list[str], extra_path: str | None) -> float | None:
    """Median MiB that importing ``modules`` adds to a fresh interpreter; None if absent."""
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    samples = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, ",".join(modules)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if out.returncode != 0:
            return None
        got = json.loads(out.stdout)
        samples.append((int(got["after"]) - int(got["before"])) / (1 << 20))
    return statistics.median(samples)


def per_event_us(decode: Callable[[bytes], object], lines: list[bytes], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time_ns()
        for line in lines:
            decode(line)
        best = min(best, (time.process_time_ns() - start) / len(lines) / 1000)
    return best


def thin_endpoints(line: bytes) -> EndpointsInfo:
    return decode_endpoints(parse_event(line)[1])


def thin_endpoints_serving(line: bytes) -> EndpointsInfo:
    return decode_endpoints(parse_event(line)[1], port_names=SERVING_PORT_NAMES)


def thin_revision(line: bytes) -> object:
    return decode_revision(parse_event(line)[1])


_CLOSERS: list[Callable[[], object]] = []


def kasync_decoders(extra_path: str | None) -> tuple[Callable[[bytes], object], ...] | None:
    """kubernetes-asyncio's watch decoding + our projection from its models, if importable."""
    if extra_path and extra_path not in sys.path:
        sys.path.insert(0, extra_path)
    try:
        watch_mod = importlib.import_module("kubernetes_asyncio.watch")
    except ImportError:
        return None

    # Its ApiClient opens an aiohttp connector, which wants a running loop; nothing is sent.
    async def make() -> Any:
        return watch_mod.Watch()

    loop = asyncio.new_event_loop()
    watch = loop.run_until_complete(make())
    _CLOSERS.append(lambda: (loop.run_until_complete(watch._api_client.close()), loop.close()))

    def endpoints(line: bytes) -> EndpointsInfo:
        model = watch.unmarshal_event(line, "V1Endpoints")["object"]
        ready: dict[str, set[str]] = {}
        not_ready: dict[str, set[str]] = {}
        for subset in model.subsets or []:
            seen: set[str] = set()
            for port in subset.ports or []:
                if port.name in seen:
                    continue
                seen.add(port.name)
                ready.setdefault(port.name, set()).update(
                    join_host_port(a.ip, port.port) for a in subset.addresses or []
                )
                not_ready.setdefault(port.name, set()).update(
                    join_host_port(a.ip, port.port) for a in subset.not_ready_addresses or []
                )
        labels = model.metadata.labels or {}
        return EndpointsInfo(
            model.metadata.namespace,
            model.metadata.name,
            labels.get("serving.knative.dev/revision", ""),
            labels.get("networking.internal.knative.dev/serviceType", ""),
            MappingProxyType({n: (frozenset(ready[n]), frozenset(not_ready[n])) for n in ready}),
        )

    def revision(line: bytes) -> object:
        # A custom resource: kubernetes-asyncio hands back the parsed dict.
        return decode_revision(watch.unmarshal_event(line, None)["object"])

    return endpoints, revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kube_client", description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="decodes per timed run")
    parser.add_argument(
        "--kubernetes-asyncio", metavar="DIR", help="a directory holding kubernetes_asyncio"
    )
    args = parser.parse_args(argv)
    ep_lines = [watch_line("MODIFIED", endpoints_object(i)) for i in range(args.events)]
    rev_lines = [watch_line("MODIFIED", revision_object(i)) for i in range(args.events)]
    # Both decoders must agree before either is timed.
    kasync = kasync_decoders(args.kubernetes_asyncio)
    if kasync is not None:
        assert kasync[0](ep_lines[0]) == thin_endpoints(ep_lines[0])
        assert kasync[1](rev_lines[0]) == thin_revision(rev_lines[0])

    print(f"watch line sizes: Endpoints {len(ep_lines[0])} B, Revision {len(rev_lines[0])} B")
    print(f"{'client':34} {'import RSS':>11} {'µs/event Endpoints':>19} {'µs/event Revision':>18}")
    for name, modules in CANDIDATES.items():
        rss = import_rss(modules, args.kubernetes_asyncio)
        rss_text = "not installed" if rss is None else f"{rss:8.1f} MiB"
        ep_us = rev_us = "-"
        if name.startswith("thin"):
            ep_us = (
                f"{per_event_us(thin_endpoints, ep_lines):.1f}"
                f" ({per_event_us(thin_endpoints_serving, ep_lines):.1f})"
            )
            rev_us = f"{per_event_us(thin_revision, rev_lines):.1f}"
        elif name.startswith("kubernetes_asyncio") and kasync is not None:
            ep_us = f"{per_event_us(kasync[0], ep_lines):.1f}"
            rev_us = f"{per_event_us(kasync[1], rev_lines):.1f}"
        print(f"{name:34} {rss_text:>11} {ep_us:>19} {rev_us:>18}")
    for close in _CLOSERS:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
