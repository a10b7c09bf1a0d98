"""``sluice service create|update``: kn's flags turned into a Knative Service manifest.

Pure: ``edit_service(current, flags)`` takes the service as the API returns it (or ``None``
to create one) and returns the manifest to apply, following ``kn service`` semantics:
``--env K=V`` / ``--env K-`` set or remove, ``--annotation`` goes to the service and the
revision template (autoscaling ones to the template only), ``--scale-min/max`` are the
``autoscaling.knative.dev/min-scale|max-scale`` annotations, ``--traffic`` replaces the traffic
block (``@latest`` is the latest ready revision, a tag names its target), ``--tag REV=TAG``
tags a target (adding it at 0 % if absent), ``--untag TAG`` removes a tag. A template change
without ``--revision-name`` drops the old name so that a new revision gets a generated one.
Every refusal is a ``ValueError`` naming the flag.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LATEST = "@latest"
AUTOSCALING = "autoscaling.knative.dev/"


@dataclass(frozen=True, slots=True)
class ServiceFlags:
    name: str
    namespace: str = "default"
    image: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    port: str | None = None
    env: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()
    concurrency_limit: int | None = None
    scale_min: int | None = None
    scale_max: int | None = None
    traffic: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    untag: tuple[str, ...] = ()
    revision_name: str | None = None


def _pair(flag: str, raw: str) -> tuple[str, str]:
    """``K=V`` → (K, V)."""
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag} {raw!r}: want KEY=VALUE")
    return key, value


def _change(flag: str, raw: str) -> tuple[str, str | None]:
    """``K=V`` → (K, V); ``K-`` → (K, None): remove K."""
    if raw.endswith("-") and "=" not in raw and len(raw) > 1:
        return raw[:-1], None
    try:
        return _pair(flag, raw)
    except ValueError:
        raise ValueError(f"{flag} {raw!r}: want KEY=VALUE or KEY-") from None


def _int(flag: str, value: int | None, low: int = 0) -> int | None:
    if value is not None and value < low:
        raise ValueError(f"{flag} {value}: must be at least {low}")
    return value


def _apply_pairs(target: dict[str, Any], flag: str, pairs: Sequence[str]) -> None:
    for raw in pairs:
        key, value = _change(flag, raw)
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def _container(flags: ServiceFlags, container: dict[str, Any]) -> None:
    if flags.image is not None:
        container["image"] = flags.image
    if flags.command:
        container["command"] = list(flags.command)
    if flags.args:
        container["args"] = list(flags.args)
    if flags.port is not None:
        name, _, number = flags.port.rpartition(":")
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise ValueError(f"--port {flags.port!r}: want PORT or NAME:PORT (1-65535)")
        container["ports"] = [{"containerPort": int(number), **({"name": name} if name else {})}]
    if flags.env:
        env = {e["name"]: e for e in container.get("env", [])}
        for raw in flags.env:
            key, value = _change("--env", raw)
            if value is None:
                env.pop(key, None)
            else:
                env[key] = {"name": key, "value": value}
        container["env"] = list(env.values())


def _traffic(flags: ServiceFlags, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_tag = {t["tag"]: t for t in current if t.get("tag")}
    traffic = current
    if flags.traffic:
        traffic, total = [], 0
        for raw in flags.traffic:
            target, value = _pair("--traffic", raw)
            if not value.isdigit() or int(value) > 100:
                raise ValueError(f"--traffic {raw!r}: percent must be 0-100")
            total += int(value)
            if target == LATEST:
                traffic.append({"latestRevision": True, "percent": int(value)})
            elif target in by_tag:
                traffic.append({**by_tag[target], "percent": int(value)})
            else:
                traffic.append(
                    {"revisionName": target, "latestRevision": False, "percent": int(value)}
                )
        if total != 100:
            raise ValueError(f"--traffic: percents sum to {total}, want 100")
    for tag in flags.untag:
        if tag not in by_tag:
            raise ValueError(f"--untag {tag}: no traffic target has this tag")
        traffic = [{k: v for k, v in t.items() if not (k == "tag" and v == tag)} for t in traffic]
        traffic = [t for t in traffic if t.get("tag") or t.get("percent")]
    for raw in flags.tags:
        target, tag = _pair("--tag", raw)
        if any(t.get("tag") == tag for t in traffic):
            raise ValueError(f"--tag {raw!r}: tag {tag} is already used")
        latest = target == LATEST
        match = [t for t in traffic if not t.get("tag") and (
            t.get("latestRevision") if latest else t.get("revisionName") == target)]  # fmt: skip
        if match:
            match[0]["tag"] = tag
        elif latest:
            traffic.append({"latestRevision": True, "percent": 0, "tag": tag})
        else:
            traffic.append(
                {"revisionName": target, "latestRevision": False, "percent": 0, "tag": tag}
            )
    return traffic


def edit_service(current: dict[str, Any] | None, flags: ServiceFlags) -> dict[str, Any]:
    """The manifest ``kn service create`` (``current`` None) or ``update`` would send."""
    _int("--concurrency-limit", flags.concurrency_limit)
    _int("--scale-min", flags.scale_min)
    _int("--scale-max", flags.scale_max)
    lo, hi = flags.scale_min, flags.scale_max
    if lo is not None and hi is not None and 0 < hi < lo:
        raise ValueError(f"--scale-min {lo}: above --scale-max {hi}")
    if flags.revision_name is not None and not flags.revision_name.startswith(f"{flags.name}-"):
        raise ValueError(f"--revision-name {flags.revision_name}: must start with '{flags.name}-'")
    if current is None:
        if flags.image is None and not flags.command:
            raise ValueError("--image: required to create a service (or --cmd)")
        if flags.traffic or flags.tags or flags.untag:
            raise ValueError("--traffic/--tag/--untag: only on update (there are no revisions)")
        current = {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": flags.name, "namespace": flags.namespace},
            "spec": {"template": {"metadata": {}, "spec": {"containers": [{}]}}},
        }
    body = copy.deepcopy(current)
    meta = body.setdefault("metadata", {})
    template = body["spec"]["template"]
    tmeta, tspec = template.setdefault("metadata", {}), template["spec"]
    before = copy.deepcopy(template)
    _container(flags, tspec["containers"][0])
    if flags.concurrency_limit is not None:
        tspec["containerConcurrency"] = flags.concurrency_limit
    template_notes = dict(tmeta.get("annotations", {}))
    service_notes = dict(meta.get("annotations", {}))
    _apply_pairs(template_notes, "--annotation", flags.annotations)
    _apply_pairs(service_notes, "--annotation",
                 [a for a in flags.annotations if not a.startswith(AUTOSCALING)])  # fmt: skip
    for key, value in (("min-scale", flags.scale_min), ("max-scale", flags.scale_max)):
        if value is not None:
            template_notes[AUTOSCALING + key] = str(value)
    for where, notes in ((tmeta, template_notes), (meta, service_notes)):
        if notes:
            where["annotations"] = notes
        else:
            where.pop("annotations", None)
    if flags.revision_name is not None:
        tmeta["name"] = flags.revision_name
    elif template != before:
        tmeta.pop("name", None)  # a changed template under the old name would be refused
    body["spec"]["traffic"] = _traffic(
        flags,
        copy.deepcopy(body["spec"].get("traffic") or [{"latestRevision": True, "percent": 100}]),
    )
    return body
