"""Read-only views of the control plane as JSON-ready dicts (what the API serves).

Pure functions of the state, the runtimes and the events; the CLI renders them (``render``).
Service readiness follows Knative's conditions: ``ConfigurationsReady`` (the latest created
revision is ready), ``RoutesReady`` (the traffic resolved) and ``Ready`` (both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from serving.controlplane import ControlPlane, Event
from serving.runtime import RevisionRuntime
from serving.state import ServiceKey, ServiceRecord, all_revisions, routed_revisions

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def host(name: str, namespace: str, domain: str) -> str:
    return f"{name}.{namespace}.{domain}"


def url(cp: ControlPlane, name: str, namespace: str) -> str:
    port = cp.settings.port
    suffix = "" if port == 80 else f":{port}"
    return f"http://{host(name, namespace, cp.settings.domain)}{suffix}"


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def conditions(cp: ControlPlane, svc: ServiceRecord) -> list[dict[str, str]]:
    latest = svc.latest_created_name()
    runtime = cp.runtimes.get((svc.key[0], latest))
    rec = svc.revision(latest)
    failure = runtime.failed(cp.clock()) if runtime is not None else None
    if rec is not None and rec.ready:
        config = _condition("ConfigurationsReady", TRUE)
    elif failure is not None:
        message = f'Revision "{latest}" failed with message: {failure}.'
        config = _condition("ConfigurationsReady", FALSE, "RevisionFailed", message)
    else:
        reason = runtime.reason() if runtime else ""
        message = f'Revision "{latest}" is not ready yet' + (f": {reason}" if reason else "")
        config = _condition("ConfigurationsReady", UNKNOWN, "RevisionMissing", message)
    if svc.route_ready:
        route = _condition("RoutesReady", TRUE)
    else:
        status = FALSE if config["status"] == FALSE else UNKNOWN
        route = _condition("RoutesReady", status, svc.route_reason, svc.route_message)
    ready = _condition("Ready", TRUE)
    for cond in (config, route):
        if cond["status"] != TRUE:
            ready = _condition("Ready", cond["status"], cond["reason"], cond["message"])
            break
    return [config, ready, route]


def service_row(cp: ControlPlane, svc: ServiceRecord) -> dict[str, Any]:
    ready = conditions(cp, svc)[1]
    return {
        "name": svc.manifest.name,
        "namespace": svc.key[0],
        "url": url(cp, svc.manifest.name, svc.key[0]),
        "latestCreated": svc.latest_created_name(),
        "latestReady": svc.latest_ready_name(),
        "ready": ready["status"],
        "reason": ready["reason"],
        "message": ready["message"],
    }


def services(cp: ControlPlane) -> list[dict[str, Any]]:
    return [service_row(cp, svc) for _, svc in sorted(cp.state.services.items())]


def _traffic_of(svc: ServiceRecord, revision: str) -> tuple[int, list[str]]:
    targets = svc.route.traffic if svc.route else ()
    mine = [t for t in targets if t.revision_name == revision]
    return sum(t.percent for t in mine), [t.tag for t in mine if t.tag]


def _pods(runtime: RevisionRuntime | None) -> list[dict[str, Any]]:
    if runtime is None:
        return []
    return [
        {
            "name": p.name,
            "phase": p.phase.value,
            "reason": p.reason,
            "endpoint": p.plan.endpoint,
            "restarts": p.restarts,
        }
        for p in runtime.pods
    ]


def revisions(cp: ControlPlane, service: str = "") -> list[dict[str, Any]]:
    rows = []
    for svc, rec in all_revisions(cp.state):
        if service and svc.manifest.name != service:
            continue
        runtime = cp.runtimes.get((svc.key[0], rec.name))
        percent, tags = _traffic_of(svc, rec.name)
        obs = runtime.autoscaler.last if runtime else None
        failure = runtime.failed(cp.clock()) if runtime and not rec.ready else None
        ready = TRUE if rec.ready else (FALSE if failure else UNKNOWN)
        rows.append(
            {
                "name": rec.name,
                "namespace": svc.key[0],
                "service": svc.manifest.name,
                "generation": rec.generation,
                "ready": ready,
                # Knative's one-word reason for a revision that is not Ready (its REASON).
                "condition": failure.reason if failure else ("" if rec.ready else "Deploying"),
                "reason": (failure.message if failure else (runtime.reason() if runtime else "")),
                "traffic": percent,
                "tags": tags,
                "desired": runtime.autoscaler.desired if runtime else 0,
                "actual": len(runtime.live_pods) if runtime else 0,
                "readyPods": len(runtime.ready_pods) if runtime else 0,
                "concurrency": round(obs.concurrency, 2) if obs else 0.0,
                "activatorConcurrency": round(obs.activator_concurrency, 2) if obs else 0.0,
                "rps": round(obs.requests_per_second, 1) if obs else 0.0,
                "pods": _pods(runtime),
            }
        )
    # Newest first within each service, as ``kn revision list`` shows them.
    order = {id(r): (svc_key, -gen) for r, svc_key, gen in _keys(rows)}
    return sorted(rows, key=lambda r: order[id(r)])


def _keys(rows: list[dict[str, Any]]) -> Iterable[tuple[dict[str, Any], str, int]]:
    for r in rows:
        yield r, f"{r['namespace']}/{r['service']}", int(r["generation"])


def _tag_url(cp: ControlPlane, tag: str, svc: ServiceRecord) -> str:
    return url(cp, f"{tag}-{svc.manifest.name}", svc.key[0])


def routes(cp: ControlPlane) -> list[dict[str, Any]]:
    rows = []
    for _, svc in sorted(cp.state.services.items()):
        traffic = [
            {
                "revision": t.revision_name,
                "percent": t.percent,
                "tag": t.tag or "",
                "url": _tag_url(cp, t.tag, svc) if t.tag else "",
            }
            for t in (svc.route.traffic if svc.route else ())
        ]
        rows.append(
            {
                "name": svc.manifest.name,
                "namespace": svc.key[0],
                "url": url(cp, svc.manifest.name, svc.key[0]),
                "ready": TRUE if svc.route_ready else UNKNOWN,
                "reason": svc.route_reason,
                "message": svc.route_message,
                "traffic": traffic,
            }
        )
    return rows


def _event_dict(ev: Event) -> dict[str, Any]:
    return {
        "time": ev.time,
        "type": ev.type,
        "reason": ev.reason,
        "object": ev.object,
        "message": ev.message,
    }


def events_for(cp: ControlPlane, key: ServiceKey, limit: int = 20) -> list[dict[str, Any]]:
    mine = [e for e in cp.events if (e.namespace, e.service) == key]
    return [_event_dict(e) for e in mine[-limit:]]


def describe(cp: ControlPlane, key: ServiceKey) -> dict[str, Any]:
    svc = cp.state.services[key]
    route = next(r for r in routes(cp) if (r["namespace"], r["name"]) == key)
    return {
        **service_row(cp, svc),
        "traffic": route["traffic"],
        "conditions": conditions(cp, svc),
        "revisions": revisions(cp, svc.manifest.name),
        "events": events_for(cp, key),
        "manifest": svc.manifest.to_dict(),
        "coldStarts": cold_starts(cp, svc),
    }


def cold_starts(cp: ControlPlane, svc: ServiceRecord) -> dict[str, Any]:
    """Per revision of ``svc`` that had any: its last cold starts and p50/p95 per phase."""
    out: dict[str, Any] = {}
    for rec in sorted(svc.history, key=lambda r: r.generation, reverse=True):
        summary = cp.cold_starts.summary((svc.key[0], rec.name))
        if summary["count"]:
            out[rec.name] = summary
    return out


def top(cp: ControlPlane) -> dict[str, Any]:
    """Per revision with pods or traffic: share, RPS, concurrency, pods, activator queue."""
    queued = cp.queue_depths()
    routed = routed_revisions(cp.state)
    rows = []
    for row in revisions(cp):
        key = (row["namespace"], row["name"])
        if not (row["actual"] or row["desired"] or key in routed):
            continue
        cold = cp.cold_starts.summary(key, last=1)
        rows.append(
            {
                **row,
                "queue": queued.get(key, 0),
                "coldStarts": cold["count"],
                "coldP50Ms": cold["totalP50Ms"],
                "coldP95Ms": cold["totalP95Ms"],
            }
        )
    return {"revisions": rows}


def gauges(cp: ControlPlane) -> Iterable[tuple[str, Mapping[str, str], float]]:
    """``(metric, labels, value)`` for the Prometheus endpoint."""
    for svc, rec in all_revisions(cp.state):
        runtime = cp.runtimes.get((svc.key[0], rec.name))
        labels = {
            "namespace_name": svc.key[0],
            "configuration_name": svc.manifest.name,
            "revision_name": rec.name,
        }
        yield "sluice_revision_desired_pods", labels, runtime.autoscaler.desired if runtime else 0
        yield "sluice_revision_actual_pods", labels, len(runtime.live_pods) if runtime else 0
        yield "sluice_revision_ready_pods", labels, len(runtime.ready_pods) if runtime else 0
        obs = runtime.autoscaler.last.concurrency if runtime else 0.0
        yield "sluice_revision_observed_concurrency", labels, obs


# --- Kubernetes-shaped objects (``sluice get -o json|yaml``) -------------------------------

GROUP = "serving.knative.dev"
KINDS = ("services", "configurations", "revisions", "routes", "pods")


def _meta(name: str, namespace: str, labels: Mapping[str, str], **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    meta.update({k: v for k, v in {"labels": dict(labels), **extra}.items() if v})
    return meta


def _k8s_conditions(conds: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """Conditions as the API server stores them: empty reason/message omitted."""
    return [{k: v for k, v in c.items() if v} for c in conds]


def _owner_labels(svc: ServiceRecord) -> dict[str, str]:
    name = svc.manifest.name
    return {f"{GROUP}/service": name, f"{GROUP}/configuration": name}


def _status_traffic(cp: ControlPlane, svc: ServiceRecord) -> list[dict[str, Any]]:
    latest = svc.latest_ready_name()
    out = []
    for t in svc.route.traffic if svc.route else ():
        entry: dict[str, Any] = {"revisionName": t.revision_name, "percent": t.percent}
        if t.tag:
            entry["tag"] = t.tag
            entry["url"] = _tag_url(cp, t.tag, svc)
        entry["latestRevision"] = t.revision_name == latest and not t.tag
        out.append(entry)
    return out


def service_object(cp: ControlPlane, svc: ServiceRecord) -> dict[str, Any]:
    body = svc.manifest.to_dict()
    m = svc.manifest
    body["metadata"] = _meta(m.name, m.namespace, m.labels, annotations=dict(m.annotations))
    address = url(cp, m.name, m.namespace)
    body["status"] = {
        "url": address,
        "address": {"url": address},
        "latestCreatedRevisionName": svc.latest_created_name(),
        "latestReadyRevisionName": svc.latest_ready_name(),
        "conditions": _k8s_conditions(conditions(cp, svc)),
        "traffic": _status_traffic(cp, svc),
    }
    return body


def configuration_object(cp: ControlPlane, svc: ServiceRecord) -> dict[str, Any]:
    m = svc.manifest
    config, ready = conditions(cp, svc)[:2]
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Configuration",
        "metadata": _meta(m.name, m.namespace, {**m.labels, f"{GROUP}/service": m.name}),
        "spec": {"template": m.template.to_dict()},
        "status": {
            "latestCreatedRevisionName": svc.latest_created_name(),
            "latestReadyRevisionName": svc.latest_ready_name(),
            "conditions": _k8s_conditions(
                [{**ready, "reason": config["reason"], "message": config["message"]}]
            ),
        },
    }


def route_object(cp: ControlPlane, svc: ServiceRecord) -> dict[str, Any]:
    m = svc.manifest
    ready = _condition("Ready", TRUE if svc.route_ready else UNKNOWN,
                       svc.route_reason, svc.route_message)  # fmt: skip
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Route",
        "metadata": _meta(m.name, m.namespace, {**m.labels, f"{GROUP}/service": m.name}),
        "spec": {"traffic": [t.to_dict() for t in m.traffic]},
        "status": {
            "url": url(cp, m.name, m.namespace),
            "conditions": _k8s_conditions([ready]),
            "traffic": _status_traffic(cp, svc),
        },
    }


def revision_objects(cp: ControlPlane) -> list[dict[str, Any]]:
    out = []
    for row in revisions(cp):
        svc = cp.state.services[(row["namespace"], row["service"])]
        rec = svc.revision(row["name"])
        assert rec is not None
        labels = {**_owner_labels(svc), f"{GROUP}/configurationGeneration": str(rec.generation)}
        tpl = rec.template.to_dict()
        reason = row["condition"]
        out.append(
            {
                "apiVersion": f"{GROUP}/v1",
                "kind": "Revision",
                "metadata": _meta(
                    row["name"],
                    row["namespace"],
                    labels,
                    annotations=tpl["metadata"].get("annotations"),
                ),
                "spec": tpl["spec"],
                "status": {
                    "conditions": _k8s_conditions(
                        [_condition("Ready", row["ready"], reason, row["reason"])]
                    ),
                    "actualReplicas": row["readyPods"],
                    "desiredReplicas": row["desired"],
                },
            }
        )
    return out


def pod_objects(cp: ControlPlane) -> list[dict[str, Any]]:
    out = []
    for row in revisions(cp):
        svc = cp.state.services[(row["namespace"], row["service"])]
        labels = {**_owner_labels(svc), f"{GROUP}/revision": row["name"]}
        for pod in row["pods"]:
            ready = pod["phase"] == "Ready"
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": _meta(pod["name"], row["namespace"], labels),
                    "status": {
                        "phase": pod["phase"],
                        "reason": pod["reason"],
                        "podIP": "127.0.0.1",
                        "queueProxy": pod["endpoint"],
                        "containerStatuses": [
                            {"name": n, "ready": ready, "restartCount": pod["restarts"]}
                            for n in ("user-container", "queue-proxy")
                        ],
                    },
                }
            )
    return out


def objects(cp: ControlPlane, kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind`` (one of ``KINDS``), shaped as the Kubernetes API returns it."""
    records = [svc for _, svc in sorted(cp.state.services.items())]
    if kind == "services":
        return [service_object(cp, s) for s in records]
    if kind == "configurations":
        return [configuration_object(cp, s) for s in records]
    if kind == "routes":
        return [route_object(cp, s) for s in records]
    if kind == "revisions":
        return revision_objects(cp)
    if kind == "pods":
        return pod_objects(cp)
    raise KeyError(kind)
