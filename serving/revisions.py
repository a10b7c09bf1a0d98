"""Revision bookkeeping and traffic resolution for one Service: pure functions over values.

A Service's history is a tuple of ``RevisionRecord``s. Applying a manifest either keeps the
latest created revision (the template did not change) or adds a new immutable one, named
``<service>-<generation:05d>`` unless the template names it (``plan_revision``). The
``spec.traffic`` list then resolves to an ``activator.model.Route`` (``resolve_route``):
``latestRevision`` entries point at the newest *ready* revision, ``revisionName`` entries at
that revision, which must exist and be ready; when any entry cannot be resolved the route keeps
its previous resolution, as Knative's route reconciler does. Entries naming the same revision
stay separate; the router merges them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from activator.affinity_config import SERVER_TIMING_ANNOTATION, route_policy_from_annotations
from activator.model import Revision, Route, TrafficTarget
from serving.manifest import API_VERSION, KIND, RevisionTemplate, ServiceManifest
from serving.manifest_loader import parse_service

REASON_REVISION_MISSING = "RevisionMissing"
REASON_REVISION_NOT_READY = "RevisionNotReady"


class RevisionError(ValueError):
    """An apply that cannot be turned into a revision (e.g. a reused name, changed template)."""


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    """One immutable revision of a Service.

    ``generation`` orders revisions: the highest is the latest created. ``ready`` means the
    revision became ready and has not failed since; scaling to zero does not clear it.
    """

    name: str
    generation: int
    template: RevisionTemplate
    ready: bool = False

    @property
    def fingerprint(self) -> str:
        return self.template.fingerprint()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "generation": self.generation,
            "ready": self.ready,
            "template": self.template.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], service: str) -> RevisionRecord:
        """Inverse of ``to_dict``; the template is re-validated (``ManifestError`` if bad)."""
        doc = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": service},
            "spec": {"template": data["template"]},
        }
        template = parse_service(doc).template
        return cls(str(data["name"]), int(data["generation"]), template, bool(data["ready"]))


@dataclass(frozen=True, slots=True)
class RevisionPlan:
    """The outcome of applying a manifest to a history.

    ``revision`` is the latest created revision afterwards; ``created`` says whether it is new.
    ``history`` is the whole history afterwards.
    """

    revision: RevisionRecord
    created: bool
    history: tuple[RevisionRecord, ...]


@dataclass(frozen=True, slots=True)
class RouteResolution:
    """``route`` is what to serve: the new resolution, or ``previous`` when ``resolved`` is
    false (then ``reason`` and ``message`` say why, as Knative's route status would)."""

    route: Route | None
    resolved: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class RevisionTraffic:
    """One row of ``sluice get revisions``: a revision's share of the main split and its tags."""

    name: str
    generation: int
    ready: bool
    percent: int
    tags: tuple[str, ...]


def revision_name(service: str, generation: int) -> str:
    """Knative's generated revision name: ``hello`` generation 2 → ``hello-00002``."""
    return f"{service}-{generation:05d}"


def latest_created(history: Sequence[RevisionRecord]) -> RevisionRecord | None:
    return max(history, key=lambda r: r.generation, default=None)


def latest_ready(history: Sequence[RevisionRecord]) -> RevisionRecord | None:
    return max((r for r in history if r.ready), key=lambda r: r.generation, default=None)


def set_ready(
    history: Sequence[RevisionRecord], name: str, ready: bool = True
) -> tuple[RevisionRecord, ...]:
    """The history with revision ``name`` marked (not) ready; ``KeyError`` if it is unknown."""
    if all(r.name != name for r in history):
        raise KeyError(name)
    return tuple(replace(r, ready=ready) if r.name == name else r for r in history)


def plan_revision(history: Sequence[RevisionRecord], manifest: ServiceManifest) -> RevisionPlan:
    """Decide whether applying ``manifest`` creates a revision, and which one is latest.

    Nothing changes when the template (name included) equals the latest created revision's.
    An explicit template name that already exists must carry the same template, otherwise
    ``RevisionError`` (Knative refuses such an update); pointing the template back at an
    older named revision makes it the latest created again, with a new generation.
    """
    history = tuple(history)
    template = manifest.template
    latest = latest_created(history)
    next_generation = (latest.generation if latest else 0) + 1
    by_name = {r.name: r for r in history}
    unchanged = latest and latest.template.name == template.name
    if latest and unchanged and latest.fingerprint == template.fingerprint():
        return RevisionPlan(latest, False, history)
    if template.name and template.name in by_name:
        existing = by_name[template.name]
        if existing.fingerprint != template.fingerprint():
            raise RevisionError(
                "Saw the following changes without a name change (-old +new): "
                "spec.template.metadata.name\n" + _diff(existing.template, template)
            )
        bumped = replace(existing, generation=next_generation)
        return RevisionPlan(bumped, False, _replace_record(history, bumped))
    name = template.name or revision_name(manifest.name, next_generation)
    if name in by_name:
        raise RevisionError(f'revision "{name}" already exists with another template')
    record = RevisionRecord(name, next_generation, template)
    return RevisionPlan(record, True, (*history, record))


def resolve_route(
    manifest: ServiceManifest,
    history: Sequence[RevisionRecord],
    previous: Route | None = None,
) -> RouteResolution:
    """Resolve ``manifest.traffic`` against ``history`` (see the module docstring)."""
    ready = latest_ready(history)
    by_name = {r.name: r for r in history}
    targets: list[TrafficTarget] = []
    problems: list[tuple[str, str]] = []
    for entry in manifest.traffic:
        name = entry.revision_name
        if entry.latest_revision:
            if ready is None:
                problems.append(
                    (
                        REASON_REVISION_MISSING,
                        f'unready configuration: Configuration "{manifest.name}" does not '
                        "have any ready Revision",
                    )
                )
                continue
            name = ready.name
        elif name not in by_name:
            problems.append(
                (REASON_REVISION_MISSING, f'Revision "{name}" referenced in traffic not found')
            )
            continue
        elif not by_name[name].ready:
            problems.append((REASON_REVISION_NOT_READY, f'Revision "{name}" is not ready'))
            continue
        targets.append(TrafficTarget(name, entry.percent, entry.tag or None))
    # Validated by the manifest loader: a bad annotation never gets this far.
    pin, rules = route_policy_from_annotations(
        manifest.annotations, "metadata.annotations", manifest.name
    )
    tags = {e.tag for e in manifest.traffic if e.tag}
    for rule in rules:
        # A rule is a traffic target too: a missing or unready revision is refused alike.
        if rule.revision is not None:
            if rule.revision not in by_name:
                missing = f'Revision "{rule.revision}" referenced in header routes not found'
                problems.append((REASON_REVISION_MISSING, missing))
            elif not by_name[rule.revision].ready:
                problems.append(
                    (REASON_REVISION_NOT_READY, f'Revision "{rule.revision}" is not ready')
                )
        elif rule.tag not in tags:
            missing = f'tag "{rule.tag}" referenced in header routes not found in traffic'
            problems.append((REASON_REVISION_MISSING, missing))
    if problems:
        message = "; ".join(dict.fromkeys(m for _, m in problems))
        return RouteResolution(previous, False, problems[0][0], message)
    route = Route(manifest.name, manifest.namespace, tuple(targets), pin, rules)
    return RouteResolution(route, True)


def build_revision(
    record: RevisionRecord, manifest: ServiceManifest, endpoints: tuple[str, ...] = ()
) -> Revision:
    """The data-plane view of one revision of ``manifest``'s Service."""
    t = record.template
    return Revision(
        name=record.name,
        namespace=manifest.namespace,
        container_concurrency=t.container_concurrency,
        timeout_seconds=t.timeout_seconds,
        response_start_timeout_seconds=t.response_start_timeout_seconds,
        idle_timeout_seconds=t.idle_timeout_seconds,
        endpoints=endpoints,
        service=manifest.name,
        configuration=manifest.name,
        protocol="h2c" if t.container.port_name == "h2c" else "http1",
        server_timing=t.annotations.get(SERVER_TIMING_ANNOTATION, "").strip().lower() == "true",
    )


def revision_traffic(
    history: Sequence[RevisionRecord], route: Route | None
) -> tuple[RevisionTraffic, ...]:
    """Per-revision traffic share (entries for one revision added up) and tags, newest first."""
    rows = []
    targets = route.traffic if route else ()
    for record in sorted(history, key=lambda r: r.generation, reverse=True):
        mine = [t for t in targets if t.revision_name == record.name]
        rows.append(
            RevisionTraffic(
                record.name,
                record.generation,
                record.ready,
                sum(t.percent for t in mine),
                tuple(t.tag for t in mine if t.tag),
            )
        )
    return tuple(rows)


def _replace_record(
    history: tuple[RevisionRecord, ...], record: RevisionRecord
) -> tuple[RevisionRecord, ...]:
    return tuple(record if r.name == record.name else r for r in history)


def _diff(old: RevisionTemplate, new: RevisionTemplate) -> str:
    before, after = _flatten(old.to_dict()), _flatten(new.to_dict())
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            if key in before:
                lines.append(f"-{key}: {before[key]!r}")
            if key in after:
                lines.append(f"+{key}: {after[key]!r}")
    return "\n".join(lines)


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}
