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
    if rec is not None and rec.ready:
        config = _condition("ConfigurationsReady", TRUE)
    elif runtime is not None and runtime.failure:
        config = _condition("ConfigurationsReady", FALSE, "RevisionFailed", runtime.failure)
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
        rows.append(
            {
                "name": rec.name,
                "namespace": svc.key[0],
                "service": svc.manifest.name,
                "generation": rec.generation,
                "ready": TRUE if rec.ready else (FALSE if runtime and runtime.failure else UNKNOWN),
                "reason": runtime.reason() if runtime else "",
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
    }


def top(cp: ControlPlane) -> dict[str, Any]:
    """Per revision with pods or traffic: share, RPS, concurrency, pods, activator queue."""
    queued = cp.queue_depths()
    routed = routed_revisions(cp.state)
    rows = []
    for row in revisions(cp):
        key = (row["namespace"], row["name"])
        if not (row["actual"] or row["desired"] or key in routed):
            continue
        rows.append({**row, "queue": queued.get(key, 0)})
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
