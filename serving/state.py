"""The control plane's desired state: Services, their revision history and resolved routes.

Pure values and functions. ``ClusterState`` is an immutable mapping from service key to
``ServiceRecord``; ``apply_manifests`` returns a new state (or raises ``ManifestError`` with
every problem, so a bad batch changes nothing); ``mark_ready`` and ``delete_service`` likewise
return new states. Route resolution (``serving.revisions.resolve_route``) runs after every
change, so a route follows its revisions becoming ready. ``StateStore`` persists a state as
one JSON file, written atomically, so ``sluice up`` comes back with the same services.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from activator.affinity_config import header_rules, sticky
from activator.model import Route, TrafficTarget
from serving.envsources import EnvSource, SourceKey, merge_sources, missing_sources
from serving.manifest import ManifestError, ServiceManifest
from serving.manifest_loader import parse_service
from serving.revisions import (
    RevisionError,
    RevisionRecord,
    latest_created,
    latest_ready,
    plan_revision,
    resolve_route,
    set_ready,
)

STATE_FILE = "state.json"
STATE_VERSION = 1

ServiceKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One applied Service.

    ``route`` is what is served now; when the manifest's traffic cannot be resolved yet
    ``route_reason``/``route_message`` say why (and ``route`` keeps the previous resolution).
    ``workdirs`` maps each revision to the directory its process runs in (the directory of
    the manifest that created it).
    """

    manifest: ServiceManifest
    history: tuple[RevisionRecord, ...] = ()
    route: Route | None = None
    route_reason: str = ""
    route_message: str = ""
    workdirs: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def key(self) -> ServiceKey:
        return self.manifest.key

    @property
    def route_ready(self) -> bool:
        return self.route is not None and not self.route_reason

    def latest_created_name(self) -> str:
        rec = latest_created(self.history)
        return rec.name if rec else ""

    def latest_ready_name(self) -> str:
        rec = latest_ready(self.history)
        return rec.name if rec else ""

    def revision(self, name: str) -> RevisionRecord | None:
        return next((r for r in self.history if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest.to_dict(),
            "history": [r.to_dict() for r in self.history],
            "route": _route_to_dict(self.route),
            "routeReason": self.route_reason,
            "routeMessage": self.route_message,
            "workdirs": dict(self.workdirs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceRecord:
        manifest = parse_service(data["manifest"])
        history = tuple(RevisionRecord.from_dict(r, manifest.name) for r in data["history"])
        return cls(
            manifest,
            history,
            _route_from_dict(data.get("route")),
            str(data.get("routeReason", "")),
            str(data.get("routeMessage", "")),
            {str(k): str(v) for k, v in dict(data.get("workdirs", {})).items()},
        )


@dataclass(frozen=True, slots=True)
class ClusterState:
    services: Mapping[ServiceKey, ServiceRecord] = field(default_factory=dict, hash=False)
    #: ConfigMaps and Secrets applied for ``envFrom``.
    sources: Mapping[SourceKey, EnvSource] = field(default_factory=dict, hash=False)

    def revision_owner(self, name: str, namespace: str = "") -> ServiceRecord | None:
        """The service owning revision ``name`` (in ``namespace`` when given)."""
        for svc in self.services.values():
            if namespace and svc.key[0] != namespace:
                continue
            if svc.revision(name) is not None:
                return svc
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "services": [s.to_dict() for _, s in sorted(self.services.items())],
            "sources": [s.to_dict() for _, s in sorted(self.sources.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterState:
        records = [ServiceRecord.from_dict(s) for s in data.get("services", [])]
        sources = [EnvSource.from_dict(s) for s in data.get("sources", [])]
        return cls({r.key: r for r in records}, {s.key: s for s in sources})


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an apply did, one line per service (``service/hello created``, ...)."""

    state: ClusterState
    messages: tuple[str, ...]
    created_revisions: tuple[tuple[ServiceKey, str], ...]


def apply_manifests(
    state: ClusterState,
    items: Sequence[tuple[ServiceManifest, str]],
    sources: Sequence[EnvSource] = (),
) -> ApplyResult:
    """Apply ``(manifest, workdir)`` pairs and ConfigMaps/Secrets all or nothing; raises
    ``ManifestError`` listing every refusal (an ``envFrom`` naming an object neither applied
    now nor before is one). ``workdir`` is where a revision the manifest creates will run."""
    services = dict(state.services)
    known, messages = merge_sources(state.sources, sources)
    errors: list[str] = []
    created: list[tuple[ServiceKey, str]] = []
    for manifest, workdir in items:
        missing = missing_sources(manifest.template.container, manifest.namespace, known)
        errors.extend(f"Service {manifest.namespace}/{manifest.name}: {m}" for m in missing)
        old = services.get(manifest.key)
        try:
            plan = plan_revision(old.history if old else (), manifest)
        except RevisionError as exc:
            errors.append(f"Service {manifest.namespace}/{manifest.name}: {exc}")
            continue
        workdirs = dict(old.workdirs) if old else {}
        if plan.created:
            workdirs[plan.revision.name] = workdir
            created.append((manifest.key, plan.revision.name))
        record = ServiceRecord(
            manifest,
            plan.history,
            old.route if old else None,
            workdirs=workdirs,
        )
        services[manifest.key] = _resolve(record)
        if old is None:
            verb = "created"
        elif old.manifest == manifest and not plan.created:
            verb = "unchanged"
        else:
            verb = "configured"
        messages.append(f"service.serving.knative.dev/{manifest.name} {verb}")
    if errors:
        raise ManifestError(errors)
    return ApplyResult(ClusterState(services, known), tuple(messages), tuple(created))


def mark_ready(
    state: ClusterState, key: ServiceKey, revision: str, ready: bool = True
) -> ClusterState:
    """The state with ``revision`` (not) ready and the service's route re-resolved."""
    svc = state.services.get(key)
    rec = svc.revision(revision) if svc else None
    if svc is None or rec is None or rec.ready == ready:
        return state
    updated = _resolve(replace(svc, history=set_ready(svc.history, revision, ready)))
    return replace(state, services={**state.services, key: updated})


def delete_service(state: ClusterState, key: ServiceKey) -> ClusterState:
    """The state without ``key``; ``KeyError`` when there is no such service."""
    if key not in state.services:
        raise KeyError(key)
    return replace(state, services={k: v for k, v in state.services.items() if k != key})


def routes(state: ClusterState) -> tuple[Route, ...]:
    return tuple(s.route for _, s in sorted(state.services.items()) if s.route is not None)


def routed_revisions(state: ClusterState) -> frozenset[tuple[str, str]]:
    """``(namespace, revision)`` of every revision a route points at (tags and header
    rules included)."""
    found = {(route.namespace, t.revision_name) for route in routes(state) for t in route.traffic}
    found |= {
        (route.namespace, r.revision)
        for route in routes(state)
        for r in route.header_rules
        if r.revision is not None
    }
    return frozenset(found)


def all_revisions(state: ClusterState) -> Iterable[tuple[ServiceRecord, RevisionRecord]]:
    for _, svc in sorted(state.services.items()):
        for rec in sorted(svc.history, key=lambda r: r.generation):
            yield svc, rec


def _resolve(record: ServiceRecord) -> ServiceRecord:
    res = resolve_route(record.manifest, record.history, record.route)
    return replace(record, route=res.route, route_reason=res.reason, route_message=res.message)


def _route_to_dict(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {
        "name": route.name,
        "namespace": route.namespace,
        "traffic": [
            {"revisionName": t.revision_name, "percent": t.percent, "tag": t.tag}
            for t in route.traffic
        ],
        **_policy_to_dict(route),
    }


def _policy_to_dict(route: Route) -> dict[str, Any]:
    """A route's stickiness and header rules in the static source's shapes (if any)."""
    out: dict[str, Any] = {}
    pin = route.sticky
    if pin is not None:
        out["sticky"] = {"mode": pin.mode, pin.mode: pin.name, "ttlSeconds": pin.ttl_seconds}
    if route.header_rules:
        out["headerRoutes"] = [
            {"header": r.header, "value": r.value}
            | ({"revisionName": r.revision} if r.revision is not None else {"tag": r.tag})
            for r in route.header_rules
        ]
    return out


def _route_from_dict(data: Any) -> Route | None:
    if not data:
        return None
    return Route(
        str(data["name"]),
        str(data["namespace"]),
        tuple(
            TrafficTarget(str(t["revisionName"]), int(t["percent"]), t.get("tag") or None)
            for t in data["traffic"]
        ),
        sticky(data.get("sticky"), "route.sticky", str(data["name"])),
        header_rules(data.get("headerRoutes"), "route.headerRoutes"),
    )


class StateStore:
    """Reads and writes ``<dir>/state.json``; writes go through a temporary file + rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE

    @property
    def fresh(self) -> bool:
        """No state saved yet: ``sluice up PATH`` applies PATH only then (or with --reapply)."""
        return not self.path.exists()

    def load(self) -> ClusterState:
        """The saved state, or an empty one; ``ManifestError`` if the file is unusable."""
        if not self.path.exists():
            return ClusterState()
        try:
            data = json.loads(self.path.read_text())
            return ClusterState.from_dict(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ManifestError([f"{self.path}: cannot restore state: {exc}"]) from None

    def save(self, state: ClusterState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_dict(), indent=1, sort_keys=True))
        os.replace(tmp, self.path)


class StateLock:
    """``<dir>/lock``, held (``flock``) by the one ``sluice up`` or ``sluice reset`` using a
    state directory, so two never share one and a reset never pulls state from under a run."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; ``ValueError`` naming the holder's pid if it is taken."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ValueError(
                f"state directory {self.directory} is in use by sluice (pid {holder}); "
                "stop it first, or give another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def reset_state(directory: Path) -> list[Path]:
    """Remove the saved state and the logs of ``directory`` (the caller holds its lock);
    returns what was removed."""
    removed = []
    for path in (directory / STATE_FILE, directory / STATE_FILE.replace(".json", ".tmp")):
        if path.exists():
            path.unlink()
            removed.append(path)
    logs = directory / "logs"
    if logs.exists():
        shutil.rmtree(logs)
        removed.append(logs)
    return removed
