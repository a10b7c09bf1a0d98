"""Knative's KIngress (``networking.internal.knative.dev/v1alpha1`` Ingress), for ingress mode.

With ``--ingress-class`` the activator is also the cluster's Knative ingress: Knative's route
controller writes one Ingress per Route (when ``config-network`` ``ingress-class`` names
Sluice's class, or the Route's ``networking.knative.dev/ingress.class`` annotation does), and
the activator serves its rules itself: host, then ``Knative-Serving-Tag`` header paths, then
the weighted split, each request drawn independently (reference §3). Requests then go gateway
→ pod in one hop. This needs RBAC beyond Knative's activator role (read Ingresses, write their
status): ``deploy/kubernetes/ingress``.

``decode_ingress`` projects an Ingress onto ``IngressInfo`` (None for another class's);
``host_rules`` turns it into the activator's ``HostRule`` values; ``ready_status`` is the
status patch that tells the route controller the rules are live (Ready, LoadBalancerReady and
NetworkConfigured, ``observedGeneration``, and the activator Service as load balancer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from activator.affinity_config import PolicyError, route_policy_from_annotations
from activator.kube.client import Resource
from activator.kube.objects import DecodeError, object_key
from activator.kubeenv import SLUICE_INGRESS_CLASS
from activator.model import HeaderRule, HostRule, Stickiness, WeightedTarget

__all__ = [
    "INGRESSES",
    "INGRESS_CLASS_ANNOTATION",
    "SLUICE_INGRESS_CLASS",
    "IngressInfo",
    "PathInfo",
    "RuleInfo",
    "SplitInfo",
    "decode_ingress",
    "host_rules",
    "ready_status",
]

INGRESSES: Final = Resource("networking.internal.knative.dev", "v1alpha1", "ingresses")
INGRESS_CLASS_ANNOTATION: Final = "networking.knative.dev/ingress.class"
TAG_HEADER: Final = "Knative-Serving-Tag"
#: Headers Knative's splits append that the activator carries as fields, not headers.
_SPLIT_HEADERS: Final = frozenset({"knative-serving-revision", "knative-serving-namespace"})


@dataclass(frozen=True, slots=True)
class SplitInfo:
    namespace: str
    revision: str
    percent: int
    append_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PathInfo:
    #: ``Knative-Serving-Tag`` exact match of a tag-header path; None for the default path.
    tag: str | None
    splits: tuple[SplitInfo, ...]
    append_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RuleInfo:
    hosts: tuple[str, ...]
    visibility: str
    paths: tuple[PathInfo, ...]


@dataclass(frozen=True, slots=True)
class IngressInfo:
    namespace: str
    name: str
    generation: int
    rules: tuple[RuleInfo, ...]
    #: Whether the status already says Ready for this generation (no write needed).
    ready: bool = False
    #: ``sluice.dev/sticky*`` and ``sluice.dev/header-routes`` (Knative copies a Route's
    #: annotations onto its Ingress).
    sticky: Stickiness | None = None
    header_rules: tuple[HeaderRule, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _map(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DecodeError(f"{where}: expected a mapping")
    return value


def _seq(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"{where}: expected a list")
    return value


def _headers(value: object, where: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in _map(value, where).items()))


def _split(raw: object, where: str, default_ns: str) -> SplitInfo:
    split = _map(raw, where)
    name = split.get("serviceName")
    if not isinstance(name, str) or not name:
        raise DecodeError(f"{where}.serviceName: missing")
    percent = split.get("percent", 0)
    if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
        raise DecodeError(f"{where}.percent: expected an integer in [0, 100]")
    headers = _headers(split.get("appendHeaders"), f"{where}.appendHeaders")
    # The split's revision is the one the ingress tells the activator about.
    revision, namespace = name, str(split.get("serviceNamespace") or default_ns)
    for key, value in headers:
        if key.lower() == "knative-serving-revision":
            revision = value
        elif key.lower() == "knative-serving-namespace":
            namespace = value
    return SplitInfo(namespace, revision, percent, headers)


def _path(raw: object, where: str, default_ns: str) -> PathInfo:
    path = _map(raw, where)
    # What Sluice cannot honour is refused (the reflector warns and skips the Ingress, which
    # then never turns Ready), never routed as if it were absent.
    if path.get("path") not in (None, "", "/"):
        raise DecodeError(f'{where}.path: only the whole host ("/") is supported')
    if path.get("rewriteHost"):
        raise DecodeError(f"{where}.rewriteHost: not supported (DomainMapping)")
    tag = None
    for name, match in _map(path.get("headers"), f"{where}.headers").items():
        exact = _map(match, f"{where}.headers.{name}").get("exact")
        if str(name).lower() == TAG_HEADER.lower() and isinstance(exact, str):
            tag = exact
        else:
            raise DecodeError(f"{where}.headers.{name}: only an exact {TAG_HEADER} is supported")
    splits = tuple(
        _split(s, f"{where}.splits[{i}]", default_ns)
        for i, s in enumerate(_seq(path.get("splits"), f"{where}.splits"))
    )
    if not splits:
        raise DecodeError(f"{where}.splits: empty")
    return PathInfo(tag, splits, _headers(path.get("appendHeaders"), f"{where}.appendHeaders"))


def decode_ingress(obj: Mapping[str, Any], ingress_class: str) -> IngressInfo | None:
    """Project an Ingress of ``ingress_class``; None for any other class."""
    namespace, name = object_key(obj)
    meta = _map(obj.get("metadata"), "metadata")
    annotations = _map(meta.get("annotations"), "metadata.annotations")
    if annotations.get(INGRESS_CLASS_ANNOTATION) != ingress_class:
        return None
    spec = _map(obj.get("spec"), "spec")
    rules: list[RuleInfo] = []
    for r, raw in enumerate(_seq(spec.get("rules"), "spec.rules")):
        rule = _map(raw, f"spec.rules[{r}]")
        hosts = tuple(str(h).lower() for h in _seq(rule.get("hosts"), f"spec.rules[{r}].hosts"))
        http = _map(rule.get("http"), f"spec.rules[{r}].http")
        paths = tuple(
            _path(p, f"spec.rules[{r}].http.paths[{i}]", namespace)
            for i, p in enumerate(_seq(http.get("paths"), f"spec.rules[{r}].http.paths"))
        )
        rules.append(RuleInfo(hosts, str(rule.get("visibility", "ExternalIP")), paths))
    sticky, header_rules = _policy(annotations, name, rules)
    generation = meta.get("generation", 0)
    status = _map(obj.get("status"), "status")
    ready = status.get("observedGeneration") == generation and any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in _seq(status.get("conditions"), "status.conditions")
    )
    return IngressInfo(
        namespace,
        name,
        generation if isinstance(generation, int) else 0,
        tuple(rules),
        ready,
        sticky,
        header_rules,
    )


def _policy(
    annotations: Mapping[str, Any], route: str, rules: list[RuleInfo]
) -> tuple[Stickiness | None, tuple[HeaderRule, ...]]:
    """The Ingress's stickiness and header rules; a malformed one, or a rule naming a tag or
    revision none of the Ingress's paths has, is a ``DecodeError`` (the Ingress is skipped,
    as for a bad traffic target)."""
    where = "metadata.annotations"
    texts = {str(k): str(v) for k, v in annotations.items() if str(k).startswith("sluice.dev/")}
    try:
        sticky, header_rules = route_policy_from_annotations(texts, where, route)
    except PolicyError as exc:
        raise DecodeError(str(exc)) from None
    tags = {p.tag for r in rules for p in r.paths if p.tag is not None}
    revisions = {s.revision for r in rules for p in r.paths for s in p.splits}
    for i, rule in enumerate(header_rules):
        path = f"{where}[sluice.dev/header-routes][{i}]"
        if rule.tag is not None and rule.tag not in tags:
            raise DecodeError(f'{path}.tag: tag "{rule.tag}" not found in the Ingress\'s paths')
        if rule.revision is not None and rule.revision not in revisions:
            raise DecodeError(
                f'{path}.revisionName: revision "{rule.revision}" not found in the Ingress\'s paths'
            )
    return sticky, header_rules


def _targets(path: PathInfo) -> tuple[WeightedTarget, ...]:
    out = []
    for split in path.splits:
        headers = tuple(
            (k, v)
            for k, v in (*path.append_headers, *split.append_headers)
            if k.lower() not in _SPLIT_HEADERS
        )
        out.append(WeightedTarget(split.namespace, split.revision, split.percent, headers))
    return tuple(out)


def host_rules(info: IngressInfo) -> tuple[HostRule, ...]:
    """The activator's routing rules for one Ingress: per rule, its hosts' default split and
    its tag-header paths (the first default path wins, as Envoy's first match does)."""
    out = []
    for rule in info.rules:
        default: tuple[WeightedTarget, ...] | None = None
        by_tag: dict[str, tuple[WeightedTarget, ...]] = {}
        for path in rule.paths:
            if path.tag is None:
                if default is None:
                    default = _targets(path)
            else:
                by_tag.setdefault(path.tag, _targets(path))
        if default is not None or by_tag:
            # The policy belongs to the route's own hosts (``<route>.<ns>...``; the Ingress is
            # named after its Route), never to its tag hosts (``<tag>-<route>.<ns>...``).
            own = any(h.split(".", 1)[0] == info.name for h in rule.hosts)
            out.append(
                HostRule(
                    rule.hosts,
                    default or (),
                    tuple(by_tag.items()),
                    info.sticky if own else None,
                    info.header_rules if own else (),
                )
            )
    return tuple(out)


def ready_status(info: IngressInfo, load_balancer: str) -> dict[str, Any]:
    """The status merge patch that marks ``info`` served, with ``load_balancer`` (the
    activator Service's in-cluster name) as both public and private load balancer."""
    conditions = [
        {"type": kind, "status": "True", "severity": ""}
        for kind in ("LoadBalancerReady", "NetworkConfigured", "Ready")
    ]
    lb = {"ingress": [{"domainInternal": load_balancer}]}
    return {
        "status": {
            "observedGeneration": info.generation,
            "conditions": conditions,
            "publicLoadBalancer": lb,
            "privateLoadBalancer": lb,
        }
    }
