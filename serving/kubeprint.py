"""``sluice get`` as ``kubectl get`` does it: pick, filter and print Kubernetes-shaped objects.

Pure functions over the API's objects (``serving.views.objects``): resource names and their
aliases, label selectors (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma = and), the
namespace/name filter, and the four outputs (table, ``wide``, ``json``/``yaml``, ``name``).
Every refusal is a ``ValueError`` with one line naming the bad flag or argument.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from serving import render

GROUP = "serving.knative.dev"
OUTPUTS = ("wide", "json", "yaml", "name")


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource type: API plural, kubectl's singular for ``-o name``, printer columns."""

    plural: str
    singular: str
    group: str
    columns: Callable[[Mapping[str, Any], bool], list[tuple[str, str]]]

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _cond(obj: Mapping[str, Any], kind: str = "Ready") -> Mapping[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def _ksvc_columns(o: Mapping[str, Any], wide: bool) -> list[tuple[str, str]]:
    st, ready = o["status"], _cond(o)
    cols = [("URL", st["url"]), ("LATESTCREATED", st["latestCreatedRevisionName"]),
            ("LATESTREADY", st["latestReadyRevisionName"]),
            ("READY", ready.get("status", "")), ("REASON", ready.get("reason", ""))]  # fmt: skip
    if wide:
        traffic = ",".join(f"{t['percent']}% -> {t['revisionName']}" for t in st["traffic"])
        cols.append(("TRAFFIC", traffic))
    return cols


def _config_columns(o: Mapping[str, Any], wide: bool) -> list[tuple[str, str]]:
    st, ready = o["status"], _cond(o)
    return [("LATESTCREATED", st["latestCreatedRevisionName"]),
            ("LATESTREADY", st["latestReadyRevisionName"]),
            ("READY", ready.get("status", "")), ("REASON", ready.get("reason", ""))]  # fmt: skip


def _route_columns(o: Mapping[str, Any], wide: bool) -> list[tuple[str, str]]:
    ready = _cond(o)
    cols = [("URL", o["status"]["url"]), ("READY", ready.get("status", "")),
            ("REASON", ready.get("reason", ""))]  # fmt: skip
    if wide:
        cols.append(("TRAFFIC", ",".join(
            f"{t['percent']}% -> {t['revisionName']}" + (f" (tag {t['tag']})" if "tag" in t
                                                        else "")
            for t in o["status"]["traffic"])))  # fmt: skip
    return cols


def _revision_columns(o: Mapping[str, Any], wide: bool) -> list[tuple[str, str]]:
    labels, st, ready = o["metadata"]["labels"], o["status"], _cond(o)
    cols = [("CONFIG NAME", labels.get(f"{GROUP}/configuration", "")),
            ("GENERATION", labels.get(f"{GROUP}/configurationGeneration", "")),
            ("READY", ready.get("status", "")), ("REASON", ready.get("reason", "")),
            ("ACTUAL REPLICAS", str(st["actualReplicas"])),
            ("DESIRED REPLICAS", str(st["desiredReplicas"]))]  # fmt: skip
    if wide:
        cols.append(("MESSAGE", ready.get("message", "")))
    return cols


def _pod_columns(o: Mapping[str, Any], wide: bool) -> list[tuple[str, str]]:
    st = o["status"]
    statuses = st["containerStatuses"]
    ready = sum(1 for c in statuses if c["ready"])
    restarts = max((c["restartCount"] for c in statuses), default=0)
    cols = [("READY", f"{ready}/{len(statuses)}"), ("STATUS", st["phase"]),
            ("RESTARTS", str(restarts))]  # fmt: skip
    if wide:
        cols += [("IP", st["podIP"]), ("QUEUE-PROXY", st["queueProxy"]),
                 ("REVISION", o["metadata"]["labels"].get(f"{GROUP}/revision", "")),
                 ("REASON", st["reason"])]  # fmt: skip
    return cols


_RESOURCES = {
    "services": Resource("services", "service", GROUP, _ksvc_columns),
    "configurations": Resource("configurations", "configuration", GROUP, _config_columns),
    "routes": Resource("routes", "route", GROUP, _route_columns),
    "revisions": Resource("revisions", "revision", GROUP, _revision_columns),
    "pods": Resource("pods", "pod", "", _pod_columns),
}
ALIASES = {
    "ksvc": "services", "ksvcs": "services", "kservice": "services", "service": "services",
    "services": "services", "configuration": "configurations", "config": "configurations",
    "configurations": "configurations", "cfg": "configurations", "route": "routes",
    "routes": "routes", "rt": "routes", "revision": "revisions", "revisions": "revisions",
    "rev": "revisions", "pod": "pods", "pods": "pods", "po": "pods",
}  # fmt: skip


def resource(kind: str) -> Resource:
    """The resource ``kind`` names (kubectl's short names included); ``ValueError`` if none."""
    plural = ALIASES.get(kind.lower())
    if plural is None:
        raise ValueError(f'the server doesn\'t have a resource type "{kind}"')
    return _RESOURCES[plural]


Requirement = tuple[str, str, str]  # (key, op, value); op in "=", "!=", "exists", "!exists"


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """``-l`` → requirements (all must hold); ``ValueError`` naming the bad term."""
    reqs: list[Requirement] = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            raise ValueError(f"-l {text!r}: empty requirement")
        if "!=" in term:
            key, _, value = term.partition("!=")
            op = "!="
        elif "=" in term:
            key, _, value = term.partition("==" if "==" in term else "=")
            op = "="
        elif term.startswith("!"):
            key, value, op = term[1:], "", "!exists"
        else:
            key, value, op = term, "", "exists"
        key, value = key.strip(), value.strip()
        if not key or any(c in key + value for c in " ()!="):
            raise ValueError(f"-l {text!r}: cannot parse requirement {term!r}")
        reqs.append((key, op, value))
    return tuple(reqs)


def matches(labels: Mapping[str, str], reqs: Sequence[Requirement]) -> bool:
    for key, op, value in reqs:
        have = labels.get(key)
        ok = {
            "=": have == value,
            "!=": have != value,
            "exists": have is not None,
            "!exists": have is None,
        }[op]
        if not ok:
            return False
    return True


def select(
    items: Sequence[Mapping[str, Any]],
    namespace: str | None,
    names: Sequence[str] = (),
    selector: Sequence[Requirement] = (),
) -> list[Mapping[str, Any]]:
    """Objects in ``namespace`` (``None`` = all), with one of ``names`` if any, matching
    ``selector``; in the order of ``names`` when names are given."""
    pool = [
        o
        for o in items
        if (namespace is None or o["metadata"]["namespace"] == namespace)
        and matches(o["metadata"].get("labels", {}), selector)
    ]
    if not names:
        return pool
    return [o for n in names for o in pool if o["metadata"]["name"] == n]


def missing(found: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    have = {o["metadata"]["name"] for o in found}
    return [n for n in names if n not in have]


def not_found(res: Resource, name: str) -> str:
    return f'Error from server (NotFound): {res.qualified} "{name}" not found'


def no_resources(namespace: str | None) -> str:
    """kubectl's wording for an empty list."""
    return "No resources found" + (f" in {namespace} namespace." if namespace else "")


def render_objects(
    res: Resource,
    found: Sequence[Mapping[str, Any]],
    output: str,
    all_namespaces: bool,
    single: bool,
) -> str:
    """``found`` printed as ``-o output`` ("" = table); ``single`` prints one object, not a
    ``List``, for json/yaml (``get KIND NAME``)."""
    if output in ("json", "yaml"):
        body: Any = (
            found[0]
            if single and len(found) == 1
            else {
                "apiVersion": "v1",
                "kind": "List",
                "items": list(found),
                "metadata": {"resourceVersion": ""},
            }
        )
        if output == "json":
            return json.dumps(body, indent=4)
        return yaml.safe_dump(body, sort_keys=False, default_flow_style=False).rstrip("\n")
    if output == "name":
        prefix = f"{res.singular}.{res.group}" if res.group else res.singular
        return "\n".join(f"{prefix}/{o['metadata']['name']}" for o in found)
    wide = output == "wide"
    headers: list[str] = (["NAMESPACE"] if all_namespaces else []) + ["NAME"]
    rows: list[list[str]] = []
    for o in found:
        cols = res.columns(o, wide)
        if not rows:
            headers += [h for h, _ in cols]
        meta = o["metadata"]
        rows.append(([meta["namespace"]] if all_namespaces else []) + [meta["name"]]
                    + [v for _, v in cols])  # fmt: skip
    return render.table(headers, rows)
