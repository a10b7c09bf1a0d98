"""Pure helpers of the fake node: what kubelet and the workload controllers would write.

No I/O here. Given a Deployment, a Service and the node's view of its pods, these functions
compute the ReplicaSet, the Pod objects, container environments (``valueFrom.fieldRef``
resolved as kubelet does), Pod ``status``, Deployment/ReplicaSet ``status`` and Endpoints
``subsets`` (as the endpoints controller does: labels copied from the Service, ready pods in
``addresses``, unready ones in ``notReadyAddresses``, terminating pods left out, ports named as
the Service's with named target ports resolved against the pod's containers).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PodView",
    "container_env",
    "deployment_status",
    "endpoints_subsets",
    "make_pod",
    "make_replicaset",
    "pod_status",
    "template_hash",
]

Obj = dict[str, Any]
NODE_NAME = "sluice-fake-node"
HOST_IP = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ContainerView:
    """One container as the node sees it."""

    name: str
    image: str
    running: bool
    ready: bool
    started_at: str  # RFC 3339, "" when never started
    restarts: int = 0
    waiting_reason: str = ""
    waiting_message: str = ""
    last_exit_code: int | None = None
    last_exit_message: str = ""


@dataclass(frozen=True, slots=True)
class PodView:
    """The node's state of one pod, enough to write its status and endpoints."""

    name: str
    namespace: str
    uid: str
    ip: str
    labels: Mapping[str, str]
    containers: tuple[ContainerView, ...]
    ready: bool
    terminating: bool
    template_hash: str
    created_at: str
    spec: Mapping[str, Any]


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable short hash of a pod template (the ``pod-template-hash`` label's role)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(c for c in digest if c in "bcdfghjklmnpqrstvwxz2456789")[:10] or digest[:10]


def _owner_ref(obj: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def make_replicaset(deployment: Mapping[str, Any], hash_: str) -> Obj:
    """The ReplicaSet a Deployment controller would create for the current template."""
    meta = deployment["metadata"]
    template = copy.deepcopy(deployment["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = hash_
    selector = copy.deepcopy(deployment["spec"]["selector"])
    selector.setdefault("matchLabels", {})["pod-template-hash"] = hash_
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{hash_}",
            "namespace": meta["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "annotations": dict(meta.get("annotations", {})),
            "ownerReferences": [_owner_ref(deployment)],
        },
        "spec": {
            "replicas": deployment["spec"].get("replicas", 1),
            "selector": selector,
            "template": template,
        },
    }


def make_pod(replicaset: Mapping[str, Any], name: str) -> Obj:
    """The Pod a ReplicaSet controller would create, already bound to the fake node."""
    template = replicaset["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    spec["nodeName"] = NODE_NAME
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": replicaset["metadata"]["namespace"],
            "labels": dict(template["metadata"].get("labels", {})),
            "annotations": dict(template["metadata"].get("annotations", {})),
            "ownerReferences": [_owner_ref(replicaset)],
        },
        "spec": spec,
    }


_FIELD_LABEL = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _field(pod: PodView, path: str, annotations: Mapping[str, str]) -> str:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": NODE_NAME,
        "spec.serviceAccountName": str(pod.spec.get("serviceAccountName", "default")),
        "status.podIP": pod.ip,
        "status.podIPs": pod.ip,
        "status.hostIP": HOST_IP,
        "status.hostIPs": HOST_IP,
    }
    if path in simple:
        return simple[path]
    match = _FIELD_LABEL.fullmatch(path)
    if match:
        source = pod.labels if match.group(1) == "labels" else annotations
        return str(source.get(match.group(2), ""))
    raise ValueError(f"env valueFrom.fieldRef.fieldPath {path!r}: not supported by the fake node")


def container_env(
    container: Mapping[str, Any], pod: PodView, annotations: Mapping[str, str]
) -> dict[str, str]:
    """The container's ``env`` with ``$(VAR)`` references and ``fieldRef``s resolved.

    ``resourceFieldRef`` resolves to "0" (the tier sets no limits it reads); ConfigMap and
    Secret references are refused with a ValueError naming the variable.
    """
    env: dict[str, str] = {}
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            value = str(item.get("value", ""))
            env[name] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value
            )
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"], annotations)
        elif "resourceFieldRef" in source:
            env[name] = "0"
        else:
            raise ValueError(
                f"env {name}: valueFrom {sorted(source)} not supported by the fake node"
            )
    return env


def _condition(type_: str, ok: bool, now: str, reason: str = "", message: str = "") -> Obj:
    cond: Obj = {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def pod_status(pod: PodView, now: str) -> Obj:
    """``status`` of a running (or terminating) pod on the fake node."""
    statuses = []
    for c in pod.containers:
        state: Obj
        if c.running:
            state = {"running": {"startedAt": c.started_at}}
        else:
            state = {"waiting": {"reason": c.waiting_reason or "ContainerCreating"}}
            if c.waiting_message:
                state["waiting"]["message"] = c.waiting_message
        status: Obj = {
            "name": c.name,
            "image": c.image,
            "imageID": f"docker-pullable://{c.image}",
            "ready": c.ready,
            "started": c.running,
            "restartCount": c.restarts,
            "state": state,
            "lastState": {},
        }
        if c.last_exit_code is not None:
            status["lastState"] = {
                "terminated": {
                    "exitCode": c.last_exit_code,
                    "reason": "Completed" if c.last_exit_code == 0 else "Error",
                    "message": c.last_exit_message,
                    "finishedAt": now,
                }
            }
        statuses.append(status)
    all_ready = all(c.ready for c in pod.containers)
    return {
        "phase": "Running",
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": pod.ip,
        "podIPs": [{"ip": pod.ip}],
        "startTime": pod.created_at,
        "conditions": [
            _condition("PodScheduled", True, pod.created_at),
            _condition("Initialized", True, pod.created_at),
            _condition("ContainersReady", all_ready, now),
            _condition("Ready", pod.ready, now),
        ],
        "containerStatuses": statuses,
    }


def deployment_status(
    deployment: Mapping[str, Any],
    pods: Sequence[PodView],
    current_hash: str,
    stalled: bool,
    now: str,
) -> Obj:
    """Deployment ``status`` from its pods; ``stalled`` = progress deadline exceeded."""
    live = [p for p in pods if not p.terminating]
    ready = [p for p in live if p.ready]
    updated = [p for p in live if p.template_hash == current_hash]
    desired = int(deployment["spec"].get("replicas", 1))
    available = len(ready) >= desired
    complete = available and len(updated) == len(live) == desired
    if stalled and not complete:
        progressing = _condition(
            "Progressing", False, now, "ProgressDeadlineExceeded",
            "ReplicaSet has timed out progressing.",
        )  # fmt: skip
    else:
        reason = "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated"
        progressing = _condition("Progressing", True, now, reason)
    conditions = [
        _condition(
            "Available",
            available,
            now,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
        ),
        progressing,
    ]
    return {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(live),
        "updatedReplicas": len(updated),
        "readyReplicas": len(ready),
        "availableReplicas": len(ready),
        "unavailableReplicas": max(0, desired - len(ready)),
        "conditions": conditions,
    }


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _target_port(port: Mapping[str, Any], pod: PodView) -> int | None:
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    if str(target).isdigit():
        return int(target)
    for container in pod.spec.get("containers", []):
        for cport in container.get("ports", []):
            if cport.get("name") == target:
                return int(cport["containerPort"])
    return None


def endpoints_subsets(service: Mapping[str, Any], pods: Sequence[PodView]) -> list[Obj]:
    """The Endpoints ``subsets`` the endpoints controller would write for ``service``."""
    selector = service["spec"].get("selector") or {}
    ns = service["metadata"]["namespace"]
    chosen = [
        p
        for p in pods
        if p.namespace == ns and not p.terminating and p.ip and _selects(selector, p.labels)
    ]
    # Group pods by their resolved port list, as the controller does (one subset per shape).
    groups: dict[str, tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for pod in sorted(chosen, key=lambda p: p.ip):
        ports = []
        for sport in service["spec"].get("ports", []):
            number = _target_port(sport, pod)
            if number is None:
                continue
            entry: Obj = {"port": number, "protocol": sport.get("protocol", "TCP")}
            if sport.get("name"):
                entry["name"] = sport["name"]
            if sport.get("appProtocol"):
                entry["appProtocol"] = sport["appProtocol"]
            ports.append(entry)
        key = json.dumps(ports, sort_keys=True)
        addresses, not_ready, _ = groups.setdefault(key, ([], [], ports))
        address = {
            "ip": pod.ip,
            "nodeName": NODE_NAME,
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod.name, "uid": pod.uid},
        }
        (addresses if pod.ready else not_ready).append(address)
    subsets = []
    for addresses, not_ready, ports in groups.values():
        subset: Obj = {"ports": ports}
        if addresses:
            subset["addresses"] = addresses
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subsets.append(subset)
    return subsets
