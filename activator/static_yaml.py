"""The static source: a YAML file of routes, revisions and queue-proxy addresses.

``parse_config`` turns already-decoded YAML into a validated ``RoutingConfig`` or raises
``ConfigError`` with one line that names the offending field path, in the spirit of Knative's
admission webhook (``routes[0].traffic[1].tag: invalid value "Bad_Tag": ...``). The first
problem found is reported; nothing is half-applied.

Rules beyond Knative's admission checks (Knative enforces these elsewhere or not at all, but a
file with no control plane behind it needs them):

* every ``revisionName`` must name a revision of the file in the route's namespace, because the
  static source cannot resolve ``configurationName`` or ``latestRevision: true``;
* route and revision names are unique per namespace, and no two hosts collide;
* a route's ``headerRoutes`` (``[{header, value, revisionName | tag}]``, checked in order
  before the weighted split) may name only revisions of the file and tags of the route;
  ``sticky`` is ``{mode: cookie, cookie, ttlSeconds}`` or ``{mode: header, header,
  ttlSeconds}``; a revision's ``serverTiming: true`` answers its cold starts with
  ``Server-Timing`` (``activator.affinity``, ``activator.coldstart``);
* ``timeoutSeconds`` (and the two other timeouts) must be in [0, 3600]; an explicit or missing
  ``timeoutSeconds: 0`` means the default of 300 s. Knative's own ceiling is the operator
  setting ``max-revision-timeout-seconds`` (600 by default); 3600 is Sluice's fixed ceiling.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from activator.affinity_config import PolicyError, header_rules, sticky
from activator.model import (
    DEFAULT_DOMAIN,
    DEFAULT_QUEUE_DEPTH,
    DEFAULT_TIMEOUT_SECONDS,
    Revision,
    RevisionKey,
    Route,
    RoutingConfig,
    TrafficTarget,
)

__all__ = [
    "MAX_CONTAINER_CONCURRENCY",
    "MAX_TIMEOUT_SECONDS",
    "ConfigError",
    "load_config_file",
    "parse_config",
]

#: Knative's ceiling for ``containerConcurrency`` (``container-concurrency-max-limit``).
MAX_CONTAINER_CONCURRENCY = 1000
#: Sluice's ceiling for any timeout field; see the module docstring.
MAX_TIMEOUT_SECONDS = 3600

_TOP_KEYS = frozenset(
    {"domain", "tagHeaderBasedRouting", "queueDepth", "routes", "revisions", "scaler"}
)
_ROUTE_KEYS = frozenset({"name", "namespace", "traffic", "sticky", "headerRoutes"})
_TARGET_KEYS = frozenset({"revisionName", "percent", "tag", "latestRevision"})
_REVISION_KEYS = frozenset(
    {
        "name",
        "namespace",
        "containerConcurrency",
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
        "idleTimeoutSeconds",
        "endpoints",
        "service",
        "configuration",
        "protocol",
        "serverTiming",
    }
)
_SCALER_KEYS = frozenset({"url"})

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z"
)
_LABEL_MAX = 63
_SUBDOMAIN_MAX = 253


class ConfigError(ValueError):
    """A static source file is invalid; the message is one line naming the field path."""


def load_config_file(path: str | Path) -> RoutingConfig:
    """Read and validate a static source file.

    Raises ``ConfigError`` (prefixed with the file name) when the file cannot be read, is not
    YAML, or fails ``parse_config``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {' '.join(str(exc).split())}") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


def parse_config(data: object) -> RoutingConfig:
    """Validate decoded YAML (``None`` counts as an empty file) and build a ``RoutingConfig``.

    Raises ``ConfigError`` with a one-line ``<field path>: <problem>`` message.
    """
    if data is None:
        data = {}
    top = _mapping(data, "", _TOP_KEYS)
    domain = _opt_str(top, "domain", "domain", DEFAULT_DOMAIN).lower()
    if not _is_subdomain(domain):
        raise ConfigError(f'domain: invalid value "{domain}": must be a DNS-1123 subdomain')
    tag_header = _opt_bool(top, "tagHeaderBasedRouting", "tagHeaderBasedRouting", False)
    queue_depth = _opt_int(top, "queueDepth", "queueDepth", DEFAULT_QUEUE_DEPTH)
    if queue_depth <= 0:
        raise ConfigError(f"queueDepth: invalid value {queue_depth}: must be > 0")

    revisions = tuple(
        _parse_revision(item, f"revisions[{i}]")
        for i, item in enumerate(_opt_list(top, "revisions", "revisions"))
    )
    seen_revisions: dict[RevisionKey, int] = {}
    for i, rev in enumerate(revisions):
        if rev.key in seen_revisions:
            raise ConfigError(
                f'revisions[{i}].name: duplicate revision "{rev.name}" in namespace '
                f'"{rev.namespace}" (also revisions[{seen_revisions[rev.key]}])'
            )
        seen_revisions[rev.key] = i

    routes = tuple(
        _parse_route(item, f"routes[{i}]", seen_revisions)
        for i, item in enumerate(_opt_list(top, "routes", "routes"))
    )
    _check_host_collisions(routes)

    scaler_url: str | None = None
    if top.get("scaler") is not None:
        scaler = _mapping(top["scaler"], "scaler", _SCALER_KEYS)
        if scaler.get("url") is not None:
            scaler_url = _opt_str(scaler, "url", "scaler.url", "")
            if not re.match(r"(?i)https?://[^/\s]+", scaler_url):
                raise ConfigError(f'scaler.url: invalid value "{scaler_url}": want an http(s) URL')

    return RoutingConfig(
        domain=domain,
        tag_header_routing=tag_header,
        queue_depth=queue_depth,
        routes=routes,
        revisions=revisions,
        scaler_url=scaler_url,
    )


def _parse_route(data: object, path: str, revisions: Mapping[RevisionKey, int]) -> Route:
    m = _mapping(data, path, _ROUTE_KEYS)
    name = _label(m, "name", path)
    namespace = _label(m, "namespace", path)
    items = _opt_list(m, "traffic", f"{path}.traffic")
    if not items:
        raise ConfigError(f"{path}.traffic: missing field: want at least one traffic target")
    targets: list[TrafficTarget] = []
    tags: dict[str, int] = {}
    for i, item in enumerate(items):
        tpath = f"{path}.traffic[{i}]"
        target = _parse_target(item, tpath)
        if (namespace, target.revision_name) not in revisions:
            raise ConfigError(
                f'{tpath}.revisionName: revision "{target.revision_name}" not found in '
                f'namespace "{namespace}"'
            )
        if target.tag is not None:
            if target.tag in tags:
                raise ConfigError(
                    f'{tpath}.tag: duplicate tag "{target.tag}" '
                    f"(also {path}.traffic[{tags[target.tag]}].tag)"
                )
            tags[target.tag] = i
            host_label = f"{target.tag}-{name}"
            if len(host_label) > _LABEL_MAX:
                raise ConfigError(
                    f'{tpath}.tag: host label "{host_label}" is longer than {_LABEL_MAX} characters'
                )
        targets.append(target)
    total = sum(t.percent for t in targets)
    if total != 100:
        raise ConfigError(f"{path}.traffic: traffic targets sum to {total}, want 100")
    try:
        pin = sticky(m.get("sticky"), f"{path}.sticky", name)
        rules = header_rules(m.get("headerRoutes"), f"{path}.headerRoutes")
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    for i, rule in enumerate(rules):
        rpath = f"{path}.headerRoutes[{i}]"
        if rule.revision is not None and (namespace, rule.revision) not in revisions:
            raise ConfigError(
                f'{rpath}.revisionName: revision "{rule.revision}" not found in '
                f'namespace "{namespace}"'
            )
        if rule.tag is not None and rule.tag not in tags:
            raise ConfigError(f'{rpath}.tag: tag "{rule.tag}" not found in {path}.traffic')
    return Route(name, namespace, tuple(targets), pin, rules)


def _parse_target(data: object, path: str) -> TrafficTarget:
    m = _mapping(data, path, _TARGET_KEYS)
    if "revisionName" not in m or m["revisionName"] in (None, ""):
        raise ConfigError(f"{path}.revisionName: missing field")
    revision = _label(m, "revisionName", path)
    if m.get("latestRevision") is not None:
        latest = _opt_bool(m, "latestRevision", f"{path}.latestRevision", False)
        if latest:
            raise ConfigError(
                f"{path}.latestRevision: may not set revisionName and latestRevision: true"
            )
    percent = _opt_int(m, "percent", f"{path}.percent", 0)
    if not 0 <= percent <= 100:
        raise ConfigError(f"{path}.percent: invalid value {percent}: must be in [0, 100]")
    tag: str | None = None
    if m.get("tag") not in (None, ""):
        tag = _opt_str(m, "tag", f"{path}.tag", "")
        if not _DNS1035_LABEL.match(tag) or len(tag) > _LABEL_MAX:
            raise ConfigError(f'{path}.tag: invalid value "{tag}": must be a DNS-1035 label')
    return TrafficTarget(revision_name=revision, percent=percent, tag=tag)


def _parse_revision(data: object, path: str) -> Revision:
    m = _mapping(data, path, _REVISION_KEYS)
    name = _label(m, "name", path)
    namespace = _label(m, "namespace", path)
    cc = _opt_int(m, "containerConcurrency", f"{path}.containerConcurrency", 0)
    if not 0 <= cc <= MAX_CONTAINER_CONCURRENCY:
        raise ConfigError(
            f"{path}.containerConcurrency: invalid value {cc}: "
            f"must be in [0, {MAX_CONTAINER_CONCURRENCY}]"
        )
    timeouts: dict[str, int] = {}
    for key in ("timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        value = _opt_int(m, key, f"{path}.{key}", 0)
        if not 0 <= value <= MAX_TIMEOUT_SECONDS:
            raise ConfigError(
                f"{path}.{key}: invalid value {value}: must be in [0, {MAX_TIMEOUT_SECONDS}]"
            )
        timeouts[key] = value
    timeout = timeouts["timeoutSeconds"] or DEFAULT_TIMEOUT_SECONDS
    if timeouts["responseStartTimeoutSeconds"] > timeout:
        raise ConfigError(
            f"{path}.responseStartTimeoutSeconds: invalid value "
            f"{timeouts['responseStartTimeoutSeconds']}: must be <= timeoutSeconds ({timeout})"
        )
    endpoints: list[str] = []
    for i, ep in enumerate(_opt_list(m, "endpoints", f"{path}.endpoints")):
        epath = f"{path}.endpoints[{i}]"
        if not isinstance(ep, str) or not _is_host_port(ep):
            raise ConfigError(f"{epath}: invalid value {ep!r}: want host:port with port 1-65535")
        if ep in endpoints:
            raise ConfigError(f'{epath}: duplicate endpoint "{ep}"')
        endpoints.append(ep)
    service = _opt_label(m, "service", path)
    configuration = _opt_label(m, "configuration", path)
    server_timing = _opt_bool(m, "serverTiming", f"{path}.serverTiming", False)
    protocol = m.get("protocol", "http1")
    if protocol not in ("http1", "h2c"):
        raise ConfigError(f"{path}.protocol: invalid value {protocol!r}: want http1 or h2c")
    return Revision(
        name=name,
        namespace=namespace,
        container_concurrency=cc,
        timeout_seconds=timeout,
        response_start_timeout_seconds=timeouts["responseStartTimeoutSeconds"],
        idle_timeout_seconds=timeouts["idleTimeoutSeconds"],
        endpoints=tuple(endpoints),
        service=service,
        configuration=configuration,
        protocol=protocol,
        server_timing=server_timing,
    )


def _check_host_collisions(routes: tuple[Route, ...]) -> None:
    # Route "a" with tag "b" owns the host label "b-a", which a route named "b-a" in the same
    # namespace would also claim; Knative reports such a clash as a domain conflict.
    owners: dict[tuple[str, str], str] = {}
    for i, route in enumerate(routes):
        claims = [(route.name, f"routes[{i}].name")]
        claims += [
            (f"{t.tag}-{route.name}", f"routes[{i}].traffic[{j}].tag")
            for j, t in enumerate(route.traffic)
            if t.tag is not None
        ]
        for label, where in claims:
            key = (route.namespace, label)
            if key in owners:
                what = "duplicate route" if where.endswith(".name") else "host of tag"
                raise ConfigError(
                    f'{where}: {what} "{label}" in namespace "{route.namespace}" '
                    f"collides with {owners[key]}"
                )
            owners[key] = where


def _mapping(data: object, path: str, allowed: frozenset[str]) -> Mapping[str, object]:
    where = path or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    for key in data:
        if not isinstance(key, str) or key not in allowed:
            field = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{field}: unknown field")
    return data


def _opt_list(m: Mapping[str, object], key: str, path: str) -> list[object]:
    value = m.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
    return value


def _opt_str(m: Mapping[str, object], key: str, path: str, default: str) -> str:
    value = m.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
    return value


def _opt_int(m: Mapping[str, object], key: str, path: str, default: int) -> int:
    value = m.get(key)
    if value is None:
        return default
    # bool is an int subclass; ``percent: true`` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: expected an integer, got {_kind(value)}")
    return value


def _opt_bool(m: Mapping[str, object], key: str, path: str, default: bool) -> bool:
    value = m.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected a boolean, got {_kind(value)}")
    return value


def _label(m: Mapping[str, object], key: str, path: str) -> str:
    if m.get(key) in (None, ""):
        raise ConfigError(f"{path}.{key}: missing field")
    value = _opt_str(m, key, f"{path}.{key}", "")
    if not _DNS1123_LABEL.match(value) or len(value) > _LABEL_MAX:
        raise ConfigError(f'{path}.{key}: invalid value "{value}": must be a DNS-1123 label')
    return value


def _opt_label(m: Mapping[str, object], key: str, path: str) -> str:
    return "" if m.get(key) in (None, "") else _label(m, key, path)


def _is_subdomain(value: str) -> bool:
    return len(value) <= _SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.match(value) is not None


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or not 1 <= int(port) <= 65535
    ):
        return False
    if host.startswith("["):
        return host.endswith("]") and ":" in host  # bracketed IPv6 literal
    return _is_subdomain(host.lower())


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
