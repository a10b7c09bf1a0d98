"""The local HTTP API of ``sluice up`` (aiohttp, loopback, JSON), used by the ``sluice`` CLI.

Routes (all JSON unless noted):

* ``GET  /api/v1/info``                      where everything listens
* ``POST /api/v1/apply``                     ``{"documents": [{"source", "text", "workdir"}]}``
* ``DELETE /api/v1/namespaces/{ns}/services/{name}``
* ``GET  /api/v1/services`` · ``/api/v1/revisions`` · ``/api/v1/routes`` · ``/api/v1/top``
* ``GET  /api/v1/objects/{kind}``            Kubernetes-shaped objects of one kind (``views.KINDS``)
* ``GET  /api/v1/namespaces/{ns}/services/{name}``   describe
* ``GET  /api/v1/logs/{revision}?tail=N``    text: every pod's log of the revision
* ``GET  /metrics``                          Prometheus text: desired/actual pods per revision

A refused apply is ``422`` with ``{"errors": [...]}`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from serving import views
from serving.controlplane import ControlPlane
from serving.manifest import ManifestError, ServiceManifest
from serving.manifest_loader import load_manifests

CP_KEY: web.AppKey[ControlPlane] = web.AppKey("control_plane", ControlPlane)
INFO_KEY: web.AppKey[dict[str, Any]] = web.AppKey("info", dict)
DEFAULT_LOG_TAIL = 200
_GAUGE_HELP = {
    "sluice_revision_desired_pods": "Pods the autoscaler wants for the revision",
    "sluice_revision_actual_pods": "Pods running (starting or ready) for the revision",
    "sluice_revision_ready_pods": "Ready pods of the revision",
    "sluice_revision_observed_concurrency": "Concurrency the autoscaler observed last second",
}


def parse_documents(
    documents: list[Mapping[str, Any]], cp: ControlPlane
) -> list[tuple[ServiceManifest, str]]:
    """Every document's services with its workdir; ``ManifestError`` listing all problems."""
    items: list[tuple[ServiceManifest, str]] = []
    errors: list[str] = []
    for doc in documents:
        source, text = str(doc.get("source", "")), str(doc.get("text", ""))
        workdir = str(doc.get("workdir", "")) or str(Path.cwd())
        try:
            found = load_manifests(text, source, cp.settings.autoscaler)
        except ManifestError as exc:
            errors.extend(exc.messages)
            continue
        items.extend((svc, workdir) for svc in found)
    seen: set[tuple[str, str]] = set()
    for svc, _ in items:
        if svc.key in seen:
            errors.append(f"Service {svc.namespace}/{svc.name} is defined more than once")
        seen.add(svc.key)
    if errors:
        raise ManifestError(errors)
    if not items:
        raise ManifestError(["no objects passed to apply"])
    return items


async def _apply(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    try:
        body = await request.json()
        documents = list(body["documents"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"errors": ["bad request: want {documents: [...]}"]}, status=400)
    try:
        result = cp.apply(parse_documents(documents, cp))
    except ManifestError as exc:
        return web.json_response({"errors": list(exc.messages)}, status=422)
    return web.json_response({"messages": list(result.messages)})


async def _delete(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    key = (request.match_info["ns"], request.match_info["name"])
    try:
        cp.delete(key)
    except KeyError:
        return _not_found(f'services.serving.knative.dev "{key[1]}" not found')
    return web.json_response({"messages": [f'Service "{key[1]}" successfully deleted']})


async def _describe(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    key = (request.match_info["ns"], request.match_info["name"])
    if key not in cp.state.services:
        return _not_found(f'services.serving.knative.dev "{key[1]}" not found')
    return web.json_response(views.describe(cp, key))


def _not_found(message: str) -> web.Response:
    return web.json_response({"errors": [message]}, status=404)


async def _services(request: web.Request) -> web.Response:
    return web.json_response({"items": views.services(request.app[CP_KEY])})


async def _revisions(request: web.Request) -> web.Response:
    service = request.query.get("service", "")
    return web.json_response({"items": views.revisions(request.app[CP_KEY], service)})


async def _routes(request: web.Request) -> web.Response:
    return web.json_response({"items": views.routes(request.app[CP_KEY])})


async def _objects(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    if kind not in views.KINDS:
        return _not_found(f'the server doesn\'t have a resource type "{kind}"')
    return web.json_response({"items": views.objects(request.app[CP_KEY], kind)})


async def _top(request: web.Request) -> web.Response:
    return web.json_response(views.top(request.app[CP_KEY]))


async def _info(request: web.Request) -> web.Response:
    return web.json_response(request.app[INFO_KEY])


async def _logs(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    revision = request.match_info["revision"]
    try:
        tail = int(request.query.get("tail", DEFAULT_LOG_TAIL))
    except ValueError:
        tail = DEFAULT_LOG_TAIL
    include_queue = request.query.get("queue", "") in ("1", "true")
    if cp.state.revision_owner(revision) is None:
        return _not_found(f'revisions.serving.knative.dev "{revision}" not found')
    return web.Response(text=read_logs(cp.settings.log_dir / revision, tail, include_queue))


def read_logs(directory: Path, tail: int, include_queue: bool = False) -> str:
    """The last ``tail`` lines of each pod's log under ``directory``, with a header per pod."""
    if not directory.is_dir():
        return ""
    files = sorted(
        p for p in directory.glob("*.log") if include_queue or not p.name.endswith(".queue.log")
    )
    parts = []
    for path in files:
        lines = path.read_text(errors="replace").splitlines()
        parts.append(f"==> {path.stem} <==")
        parts.extend(lines[-tail:] if tail > 0 else lines)
    return "\n".join(parts) + ("\n" if parts else "")


async def _metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for name, labels, value in views.gauges(request.app[CP_KEY]):
        if name not in gauges:
            gauges[name] = Gauge(name, _GAUGE_HELP[name], list(labels), registry=registry)
        gauges[name].labels(**labels).set(value)
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def make_app(cp: ControlPlane, info: dict[str, Any]) -> web.Application:
    app = web.Application()
    app[CP_KEY] = cp
    app[INFO_KEY] = info
    app.router.add_get("/api/v1/info", _info)
    app.router.add_post("/api/v1/apply", _apply)
    app.router.add_get("/api/v1/services", _services)
    app.router.add_get("/api/v1/revisions", _revisions)
    app.router.add_get("/api/v1/routes", _routes)
    app.router.add_get("/api/v1/top", _top)
    app.router.add_get("/api/v1/objects/{kind}", _objects)
    app.router.add_get("/api/v1/namespaces/{ns}/services/{name}", _describe)
    app.router.add_delete("/api/v1/namespaces/{ns}/services/{name}", _delete)
    app.router.add_get("/api/v1/logs/{revision}", _logs)
    app.router.add_get("/metrics", _metrics)
    return app
