"""ConfigMaps and Secrets for ``envFrom``: parsed from manifests, kept in the state, resolved
into a container's environment. Pure values and functions.

Only their literal keys matter here: a ConfigMap's ``data``, a Secret's ``data`` (base64, as
the API stores it) and ``stringData`` (plain, winning over ``data`` as the API server merges
them). ``resolve_env_from`` builds the variables as the kubelet does: ``envFrom`` sources in
order with their prefix, keys that are not valid variable names skipped (and named), then
``env`` overrides (done by the caller). A reference to an object Sluice does not have is an
error naming it, unless ``optional``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving import schema
from serving.manifest import DEFAULT_NAMESPACE, Container, ManifestError

KINDS = ("ConfigMap", "Secret")
#: The kubelet's rule for names taken from ``envFrom`` (C identifiers, plus '-' and '.').
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

SourceKey = tuple[str, str, str]  # (namespace, kind, name)


@dataclass(frozen=True, slots=True)
class EnvSource:
    """One ConfigMap or Secret: its decoded key/value pairs."""

    namespace: str
    kind: str
    name: str
    data: Mapping[str, str] = field(default_factory=dict, hash=False)
    warnings: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def key(self) -> SourceKey:
        return (self.namespace, self.kind, self.name)

    @property
    def resource(self) -> str:
        """kubectl's name for it: ``configmap/settings``."""
        return f"{self.kind.lower()}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "kind": self.kind, "name": self.name,
                "data": dict(self.data)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvSource:
        values = {str(k): str(v) for k, v in dict(data.get("data", {})).items()}
        return cls(str(data["namespace"]), str(data["kind"]), str(data["name"]), values)


def parse_env_source(doc: Mapping[str, Any], namespace: str = "") -> EnvSource:
    """A ``v1`` ConfigMap or Secret document; ``ManifestError`` listing every problem."""
    kind = str(doc.get("kind"))
    problems, warnings = schema.check(
        doc, schema.CONFIG_MAP if kind == "ConfigMap" else schema.SECRET
    )
    errors = [f"{p.message}: {p.path}" for p in problems]
    if doc.get("apiVersion") != "v1":
        errors.append(f'unsupported apiVersion "{doc.get("apiVersion")}", want v1: apiVersion')
    meta = _mapping(doc, "metadata")
    name = str(meta.get("name") or "")
    if not name:
        errors.append("missing field(s): metadata.name")
    have = str(meta.get("namespace") or "")
    if have and namespace and have != namespace:
        errors.append(f'the namespace from the provided object "{have}" does not match the '
                      f'namespace "{namespace}" (-n): metadata.namespace')  # fmt: skip
    data: dict[str, str] = {}
    for key, value in _mapping(doc, "data").items():
        if kind == "Secret" and isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                errors.append(f"invalid value: not base64-encoded UTF-8 text: data[{key}]")
                continue
        data[str(key)] = str(value)
    data.update({str(k): str(v) for k, v in _mapping(doc, "stringData").items()})
    if errors:
        raise ManifestError(errors)
    return EnvSource(
        have or namespace or DEFAULT_NAMESPACE,
        kind,
        name,
        data,
        tuple(f"{w.message}: {w.path}" for w in warnings),
    )


def _mapping(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def missing_sources(
    container: Container, namespace: str, known: Mapping[SourceKey, EnvSource]
) -> list[str]:
    """One message per ``envFrom`` reference (not optional) to an object not in ``known``."""
    out = []
    for i, ref in enumerate(container.env_from):
        if not ref.optional and (namespace, ref.kind, ref.name) not in known:
            field_name = "configMapRef" if ref.kind == "ConfigMap" else "secretRef"
            out.append(
                f'{ref.kind.lower()}s "{ref.name}" not found in namespace "{namespace}" (apply '
                f"it with the service, or mark it optional): "
                f"spec.template.spec.containers[0].envFrom[{i}].{field_name}.name"
            )
    return out


def resolve_env_from(
    container: Container, namespace: str, known: Mapping[SourceKey, EnvSource]
) -> tuple[list[tuple[str, str]], list[str]]:
    """``(variables, skipped)``: the ``envFrom`` variables in order, and the keys skipped
    because they are not valid variable names. ``KeyError`` names a missing object."""
    pairs: list[tuple[str, str]] = []
    skipped: list[str] = []
    for ref in container.env_from:
        source = known.get((namespace, ref.kind, ref.name))
        if source is None:
            if ref.optional:
                continue
            raise KeyError(f'{ref.kind.lower()}s "{ref.name}" not found in namespace "{namespace}"')
        for key in sorted(source.data):
            name = ref.prefix + key
            if _ENV_NAME.match(name):
                pairs.append((name, source.data[key]))
            else:
                skipped.append(name)
    return pairs, skipped


def merge_sources(
    old: Mapping[SourceKey, EnvSource], new: Sequence[EnvSource]
) -> tuple[dict[SourceKey, EnvSource], list[str]]:
    """The objects after applying ``new``, and kubectl's line for each."""
    merged = dict(old)
    messages = []
    for source in new:
        before = merged.get(source.key)
        verb = "created" if before is None else ("unchanged" if before == source else "configured")
        merged[source.key] = source
        messages.append(f"{source.resource} {verb}")
    return merged, messages
