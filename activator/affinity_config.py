"""Reading header rules, stickiness and the Server-Timing switch from their two spellings.

* Knative manifests (``sluice up``): annotations. On a Service (its Route),
  ``sluice.dev/sticky`` (``cookie`` or ``header``), ``sluice.dev/sticky-header`` (the header
  name, header mode), ``sluice.dev/sticky-cookie`` (the cookie name, default
  ``sluice-<route>``), ``sluice.dev/sticky-ttl-seconds`` (default 3600) and
  ``sluice.dev/header-routes``, a YAML or JSON list of ``{header, value, revisionName | tag}``;
  on a revision template, ``sluice.dev/server-timing: "true"``.
* The static source file: the same as fields, ``routes[i].sticky`` (``{mode, header, cookie,
  ttlSeconds}``), ``routes[i].headerRoutes`` and ``revisions[i].serverTiming``.

Every error is a ``PolicyError`` whose message starts with the field path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml

from activator.model import DEFAULT_STICKY_TTL_SECONDS, HeaderRule, Stickiness

__all__ = [
    "HEADER_ROUTES_ANNOTATION",
    "SERVER_TIMING_ANNOTATION",
    "STICKY_ANNOTATIONS",
    "PolicyError",
    "header_rules",
    "route_policy_from_annotations",
    "server_timing_from_annotations",
    "sticky",
]

STICKY = "sluice.dev/sticky"
STICKY_HEADER = "sluice.dev/sticky-header"
STICKY_COOKIE = "sluice.dev/sticky-cookie"
STICKY_TTL = "sluice.dev/sticky-ttl-seconds"
STICKY_ANNOTATIONS = (STICKY, STICKY_HEADER, STICKY_COOKIE, STICKY_TTL)
HEADER_ROUTES_ANNOTATION = "sluice.dev/header-routes"
SERVER_TIMING_ANNOTATION = "sluice.dev/server-timing"
#: A year: longer pins outlive any canary.
MAX_TTL_SECONDS = 365 * 24 * 3600

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_REVISION = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_RULE_KEYS = frozenset({"header", "value", "revisionName", "tag"})
_STICKY_KEYS = frozenset({"mode", "header", "cookie", "ttlSeconds"})
#: Headers a rule may not match on: routing and probe headers the activator owns.
_RESERVED = frozenset(
    {
        "host",
        "knative-serving-tag",
        "knative-serving-revision",
        "knative-serving-namespace",
        "k-network-probe",
        "k-kubelet-probe",
    }
)


class PolicyError(ValueError):
    """A malformed rule or stickiness setting; the message starts with its field path."""


def sticky(data: object, path: str, route: str) -> Stickiness | None:
    """``{mode: cookie|header, header, cookie, ttlSeconds}`` (None or absent: not sticky)."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise PolicyError(f"{path}: expected a mapping, got {_kind(data)}")
    for key in data:
        if key not in _STICKY_KEYS:
            raise PolicyError(f"{path}.{key}: unknown field")
    mode = data.get("mode")
    ttl = data.get("ttlSeconds", DEFAULT_STICKY_TTL_SECONDS)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise PolicyError(f"{path}.ttlSeconds: invalid value {ttl!r}: want 1-{MAX_TTL_SECONDS}")
    if mode == "cookie":
        if data.get("header") is not None:
            raise PolicyError(f"{path}.header: only for mode header")
        name = data.get("cookie", f"sluice-{route}")
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise PolicyError(f"{path}.cookie: invalid value {name!r}: want a cookie name")
        return Stickiness("cookie", name, ttl)
    if mode == "header":
        if data.get("cookie") is not None:
            raise PolicyError(f"{path}.cookie: only for mode cookie")
        name = data.get("header")
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise PolicyError(f"{path}.header: invalid value {name!r}: want a header name")
        if name.lower() in _RESERVED:
            raise PolicyError(f'{path}.header: "{name}" is reserved for routing')
        return Stickiness("header", name.lower(), ttl)
    raise PolicyError(f"{path}.mode: invalid value {mode!r}: want cookie or header")


def header_rules(data: object, path: str) -> tuple[HeaderRule, ...]:
    """An ordered list of ``{header, value, revisionName | tag}``."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise PolicyError(f"{path}: expected a list, got {_kind(data)}")
    rules: list[HeaderRule] = []
    for i, item in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise PolicyError(f"{where}: expected a mapping, got {_kind(item)}")
        for key in item:
            if key not in _RULE_KEYS:
                raise PolicyError(f"{where}.{key}: unknown field")
        header = item.get("header")
        if not isinstance(header, str) or not _TOKEN.match(header):
            raise PolicyError(f"{where}.header: invalid value {header!r}: want a header name")
        if header.lower() in _RESERVED:
            raise PolicyError(f'{where}.header: "{header}" is reserved for routing')
        value = item.get("value")
        if not isinstance(value, str) or not value.isprintable() or not value.isascii():
            raise PolicyError(f"{where}.value: invalid value {value!r}: want printable ASCII")
        revision, tag = item.get("revisionName"), item.get("tag")
        if (revision is None) == (tag is None):
            raise PolicyError(f"{where}: want exactly one of revisionName and tag")
        if revision is not None and (
            not isinstance(revision, str) or not _REVISION.match(revision)
        ):
            raise PolicyError(f"{where}.revisionName: invalid value {revision!r}")
        if tag is not None and (not isinstance(tag, str) or not _LABEL.match(tag)):
            raise PolicyError(f"{where}.tag: invalid value {tag!r}: must be a DNS-1035 label")
        rules.append(HeaderRule(header.lower(), value, revision, tag))
    return tuple(rules)


def route_policy_from_annotations(
    annotations: Mapping[str, str], path: str, route: str
) -> tuple[Stickiness | None, tuple[HeaderRule, ...]]:
    """A Service's (Route's) ``sluice.dev/`` routing annotations; ``path`` is where the
    annotations are (``metadata.annotations``)."""
    mode = annotations.get(STICKY)
    spec: dict[str, object] | None = None
    if mode is not None:
        spec = {"mode": mode.strip()}
        if STICKY_HEADER in annotations:
            spec["header"] = annotations[STICKY_HEADER].strip()
        if STICKY_COOKIE in annotations:
            spec["cookie"] = annotations[STICKY_COOKIE].strip()
        if STICKY_TTL in annotations:
            text = annotations[STICKY_TTL].strip()
            try:
                spec["ttlSeconds"] = int(text)
            except ValueError:
                raise PolicyError(
                    f"{path}[{STICKY_TTL}]: invalid value {text!r}: want whole seconds"
                ) from None
    else:
        for key in STICKY_ANNOTATIONS[1:]:
            if key in annotations:
                raise PolicyError(f"{path}[{key}]: needs {STICKY}")
    try:
        found = sticky(spec, f"{path}[{STICKY}]", route)
    except PolicyError as exc:
        raise PolicyError(_annotation_path(str(exc), path)) from None
    rules: tuple[HeaderRule, ...] = ()
    routes = annotations.get(HEADER_ROUTES_ANNOTATION)
    if routes is not None:
        where = f"{path}[{HEADER_ROUTES_ANNOTATION}]"
        try:
            data = yaml.safe_load(routes)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{where}: invalid YAML: {' '.join(str(exc).split())}") from None
        rules = header_rules(data, where)
    return found, rules


def server_timing_from_annotations(annotations: Mapping[str, str], path: str) -> bool:
    value = annotations.get(SERVER_TIMING_ANNOTATION)
    if value is None:
        return False
    if value.strip().lower() not in ("true", "false"):
        raise PolicyError(
            f"{path}[{SERVER_TIMING_ANNOTATION}]: invalid value {value!r}: want true or false"
        )
    return value.strip().lower() == "true"


def _annotation_path(message: str, path: str) -> str:
    """``<path>[sluice.dev/sticky].header: ...`` → the annotation that holds the header."""
    prefix = f"{path}[{STICKY}]."
    for field, key in (("header", STICKY_HEADER), ("cookie", STICKY_COOKIE)):
        if message.startswith(prefix + field + ":"):
            return f"{path}[{key}]" + message[len(prefix + field) :]
    if message.startswith(prefix + "ttlSeconds:"):
        return f"{path}[{STICKY_TTL}]" + message[len(prefix + "ttlSeconds") :]
    if message.startswith(prefix + "mode:"):
        return f"{path}[{STICKY}]" + message[len(prefix + "mode") :]
    return message


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
