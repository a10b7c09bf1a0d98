"""The local HTTP API of ``sluice up`` (aiohttp, loopback, JSON), used by the ``sluice`` CLI.

Routes (all JSON unless noted):

* ``GET  /api/v1/info``                      where everything listens
* ``POST /api/v1/apply``                     ``{"documents": [{"source", "text", "workdir"}]}``
* ``DELETE /api/v1/namespaces/{ns}/services/{name}``
* ``GET  /api/v1/services`` · ``/api/v1/revisions`` · ``/api/v1/routes`` · ``/api/v1/top``
* ``GET  /api/v1/objects/{kind}``            Kubernetes-shaped objects of one kind (``views.KINDS``)
* ``GET  /api/v1/namespaces/{ns}/services/{name}``   describe
* ``GET  /api/v1/namespaces/{ns}/services/{name}/wait?timeout=S``  until Ready and routed
  (``200``), failed or timed out (``422``)
* ``GET  /api/v1/namespaces/{ns}/logs/{revision-or-pod}?tail=N&container=C&follow=1``  text
* ``GET  /metrics``                          Prometheus text: desired/actual pods per revision

A refused apply is ``422`` with ``{"errors": [...]}`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from activator.model import RoutingConfig
from serving import views
from serving.controlplane import ControlPlane
from serving.envsources import EnvSource
from serving.manifest import ManifestError, ServiceManifest
from serving.manifest_loader import load_batch

CP_KEY: web.AppKey[ControlPlane] = web.AppKey("control_plane", ControlPlane)
INFO_KEY: web.AppKey[dict[str, Any]] = web.AppKey("info", dict)
APPLIED_KEY: web.AppKey[Callable[[], RoutingConfig | None]] = web.AppKey("applied")
DEFAULT_LOG_TAIL = 200
DEFAULT_WAIT_SECONDS = 600.0
LOG_FOLLOW_SECONDS = 0.25
WAIT_POLL_SECONDS = 0.05
_GAUGE_HELP = {
    "sluice_revision_desired_pods": "Pods the autoscaler wants for the revision",
    "sluice_revision_actual_pods": "Pods running (starting or ready) for the revision",
    "sluice_revision_ready_pods": "Ready pods of the revision",
    "sluice_revision_observed_concurrency": "Concurrency the autoscaler observed last second",
}


def parse_documents(documents: list[Mapping[str, Any]], cp: ControlPlane) -> Applied:
    """Every document's services (with their workdir) and ConfigMaps/Secrets;
    ``ManifestError`` listing all problems."""
    items: list[tuple[ServiceManifest, str]] = []
    sources: list[EnvSource] = []
    errors: list[str] = []
    for doc in documents:
        source, text = str(doc.get("source", "")), str(doc.get("text", ""))
        workdir = str(doc.get("workdir", "")) or str(Path.cwd())
        try:
            namespace = str(doc.get("namespace", ""))
            found = load_batch(text, source, cp.settings.autoscaler, namespace)
        except ManifestError as exc:
            errors.extend(exc.messages)
            continue
        items.extend((svc, workdir) for svc in found.services)
        sources.extend(found.sources)
    seen: set[tuple[str, str]] = set()
    for svc, _ in items:
        if svc.key in seen:
            errors.append(f"Service {svc.namespace}/{svc.name} is defined more than once")
        seen.add(svc.key)
    if errors:
        raise ManifestError(errors)
    if not items and not sources:
        raise ManifestError(["no objects passed to apply"])
    return Applied(items, sources)


@dataclass(frozen=True, slots=True)
class Applied:
    items: list[tuple[ServiceManifest, str]]
    sources: list[EnvSource]

    @property
    def warnings(self) -> list[str]:
        found = [w for svc, _ in self.items for w in svc.warnings]
        return found + [w for s in self.sources for w in s.warnings]


async def _apply(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    try:
        body = await request.json()
        documents = list(body["documents"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"errors": ["bad request: want {documents: [...]}"]}, status=400)
    try:
        applied = parse_documents(documents, cp)
        result = cp.apply(applied.items, applied.sources)
    except ManifestError as exc:
        return web.json_response({"errors": list(exc.messages)}, status=422)
    keys = [list(svc.key) for svc, _ in applied.items]
    return web.json_response(
        {"messages": list(result.messages), "services": keys, "warnings": applied.warnings}
    )


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


def ready_state(
    cp: ControlPlane, applied: RoutingConfig | None, key: tuple[str, str]
) -> tuple[str, str]:
    """``(status, why)`` of a service for ``--wait``: "True" only when it is Ready and the
    activator serves its current route (so the next request is routed, not 404)."""
    svc = cp.state.services.get(key)
    if svc is None:
        return views.FALSE, f'services.serving.knative.dev "{key[1]}" not found'
    ready = views.conditions(cp, svc)[1]
    why = ": ".join(x for x in (ready["reason"], ready["message"]) if x)
    if ready["status"] != views.TRUE:
        return ready["status"], why
    if applied is None or svc.route not in applied.routes:
        return views.UNKNOWN, "the activator has not applied the route yet"
    return views.TRUE, ""


async def _wait(request: web.Request) -> web.Response:
    cp, applied = request.app[CP_KEY], request.app[APPLIED_KEY]
    key = (request.match_info["ns"], request.match_info["name"])
    try:
        timeout = float(request.query.get("timeout", DEFAULT_WAIT_SECONDS))
    except ValueError:
        return web.json_response({"errors": ["timeout: want seconds"]}, status=400)
    deadline = time.monotonic() + timeout
    while True:
        status, why = ready_state(cp, applied(), key)
        if status == views.TRUE:
            return web.json_response({"url": views.url(cp, key[1], key[0])})
        if status == views.FALSE:
            return web.json_response({"errors": [f"service {key[0]}/{key[1]}: {why}"]}, status=422)
        if time.monotonic() >= deadline:
            return web.json_response(
                {"errors": [f"timeout: service {key[0]}/{key[1]} not ready after "
                            f"{timeout:g}s: {why or 'waiting'}"]}, status=422)  # fmt: skip
        await asyncio.sleep(WAIT_POLL_SECONDS)


async def _top(request: web.Request) -> web.Response:
    return web.json_response(views.top(request.app[CP_KEY]))


async def _info(request: web.Request) -> web.Response:
    return web.json_response(request.app[INFO_KEY])


async def _logs(request: web.Request) -> web.StreamResponse:
    """A revision's (or one pod's) log; ``container`` user-container (default) or
    queue-proxy or all; ``follow=1`` keeps streaming appended lines until the client leaves."""
    cp = request.app[CP_KEY]
    ns, name = request.match_info["ns"], request.match_info["name"]
    try:
        tail = int(request.query.get("tail", DEFAULT_LOG_TAIL))
    except ValueError:
        return web.json_response({"errors": ["tail: want a number of lines"]}, status=400)
    container = request.query.get("container", "user-container")
    if container not in ("user-container", "queue-proxy", "all"):
        return web.json_response(
            {"errors": [f"container {container}: want user-container or queue-proxy"]},
            status=400,
        )
    revision, _, index = name.rpartition("-deployment-")
    pod = name if revision and index.isdigit() else ""
    revision = revision if pod else name
    if cp.state.revision_owner(revision, ns) is None:
        kind = "pods" if pod else "revisions.serving.knative.dev"
        return _not_found(f'{kind} "{name}" not found')
    files = log_files(cp.settings.revision_log_dir(ns, revision), container, pod)
    if request.query.get("follow", "") not in ("1", "true"):
        return web.Response(text=read_logs(files, tail))
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    await resp.write(read_logs(files, tail).encode())
    offsets = {p: p.stat().st_size if p.exists() else 0 for p in files}
    while True:  # ends when the client disconnects (the write raises)
        await asyncio.sleep(LOG_FOLLOW_SECONDS)
        for path in log_files(cp.settings.revision_log_dir(ns, revision), container, pod):
            size = path.stat().st_size if path.exists() else 0
            start = offsets.get(path, 0)
            if size > start:
                with path.open("rb") as fh:
                    fh.seek(start)
                    await resp.write(fh.read(size - start))
                offsets[path] = size


def log_files(directory: Path, container: str, pod: str = "") -> list[Path]:
    """The log files of ``container`` ("all" for both) of every pod (or ``pod``) in
    ``directory``."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.log")):
        queue = path.name.endswith(".queue.log")
        owner = path.name.removesuffix(".queue.log").removesuffix(".log")
        if pod and owner != pod:
            continue
        if container == "all" or queue == (container == "queue-proxy"):
            found.append(path)
    return found


def read_logs(files: list[Path], tail: int) -> str:
    """The last ``tail`` lines of each file; a header per file when there are several."""
    parts = []
    for path in files:
        lines = path.read_text(errors="replace").splitlines()
        if len(files) > 1:
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


def make_app(
    cp: ControlPlane,
    info: dict[str, Any],
    applied: Callable[[], RoutingConfig | None] = lambda: None,
) -> web.Application:
    """``applied`` gives the routing configuration the activator serves now."""
    app = web.Application()
    app[CP_KEY] = cp
    app[APPLIED_KEY] = applied
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
    app.router.add_get("/api/v1/namespaces/{ns}/services/{name}/wait", _wait)
    app.router.add_get("/api/v1/namespaces/{ns}/logs/{name}", _logs)
    app.router.add_get("/metrics", _metrics)
    return app
