"""Reading Knative Service manifests: YAML in, validated ``ServiceManifest`` values out.

Defaulting and the messages follow Knative's webhook: each message ends with the field path(s)
it is about, and every problem in a manifest is reported, not just the first, so one bad
manifest refuses a whole batch. Validation is strict as ``kubectl --validate=strict`` is
(``serving.schema``): unknown fields, duplicate keys and wrong types are refused; fields Sluice
cannot honour are refused or warned about by name. Messages from text carry ``file:line``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activator.affinity_config import (
    PolicyError,
    route_policy_from_annotations,
    server_timing_from_annotations,
)
from activator.model import DEFAULT_TIMEOUT_SECONDS
from serving import schema
from serving.autoscaling_config import AutoscalerConfig, annotation_errors
from serving.envsources import KINDS as ENV_SOURCE_KINDS
from serving.envsources import EnvSource, parse_env_source
from serving.failures import PROGRESS_DEADLINE_ANNOTATION, progress_deadline
from serving.manifest import (
    API_VERSION,
    DEFAULT_NAMESPACE,
    DEFAULT_PORT,
    ENV_FROM_REFS,
    KIND,
    MAX_CONTAINER_CONCURRENCY,
    MAX_TIMEOUT_SECONDS,
    PORT_NAMES,
    PROBE_HANDLERS,
    RESERVED_PORTS,
    Container,
    EnvFrom,
    EnvVar,
    ManifestError,
    ReadinessProbe,
    RevisionTemplate,
    ServiceManifest,
    TrafficEntry,
)
from serving.quantity import parse_quantity
from serving.yaml_source import Document, YamlError, read_documents

#: The ``resources.limits`` a container runtime is given (``--cpus``, ``--memory``).
LIMITS = ("cpu", "memory")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one text (or path) applies: Services, and ConfigMaps/Secrets for envFrom."""

    services: tuple[ServiceManifest, ...] = ()
    sources: tuple[EnvSource, ...] = ()


def load_manifests(
    text: str,
    source: str = "",
    autoscaler: AutoscalerConfig | None = None,
    namespace: str = "",
) -> list[ServiceManifest]:
    """The Services of ``load_batch`` (ConfigMaps and Secrets are checked, not returned)."""
    return list(load_batch(text, source, autoscaler, namespace).services)


def load_batch(
    text: str,
    source: str = "",
    autoscaler: AutoscalerConfig | None = None,
    namespace: str = "",
) -> Batch:
    """Parse every YAML document in ``text``; empty documents are skipped.

    ``namespace`` (``apply -n``) is the namespace of documents that name none; a document
    naming another one is refused, as kubectl does. Raises ``ManifestError`` with every
    problem of every document, each as ``source:line: message: path``, so one bad manifest
    refuses them all. Warnings (ignored fields) come back on each object, located the same way.
    """
    try:
        docs = read_documents(text)
    except YamlError as exc:
        raise ManifestError([f"{source}: {exc}" if source else str(exc)]) from None
    services: list[ServiceManifest] = []
    sources: list[EnvSource] = []
    errors: list[str] = []
    for doc in docs:
        for line, message, path in doc.duplicates:
            errors.append(_at(source, line, f"{message}: {path}"))
        kind = doc.value.get("kind") if isinstance(doc.value, dict) else None
        try:
            if kind in ENV_SOURCE_KINDS:
                found = parse_env_source(doc.value, namespace)
                located = tuple(_located(source, doc, w) for w in found.warnings)
                sources.append(dataclasses.replace(found, warnings=located))
                continue
            svc = parse_service(doc.value, autoscaler, namespace)
        except ManifestError as exc:
            errors.extend(_located(source, doc, m) for m in exc.messages)
            continue
        warnings = tuple(_located(source, doc, w) for w in svc.warnings)
        services.append(dataclasses.replace(svc, warnings=warnings))
    errors.extend(_at(source, 0, m) for m in _duplicates(services))
    if errors:
        raise ManifestError(errors)
    return Batch(tuple(services), tuple(sources))


def _at(source: str, line: int, message: str) -> str:
    if source and line:
        return f"{source}:{line}: {message}"
    if source or line:
        return f"{source or f'line {line}'}: {message}"
    return message


def _located(source: str, doc: Document, message: str) -> str:
    """``message`` (ending in ``: path[, path]``) prefixed with where its first path is."""
    path = message.rsplit(": ", 1)[-1].split(", ")[0]
    return _at(source, doc.line_of(path), message)


def load_path(
    path: str | Path, autoscaler: AutoscalerConfig | None = None
) -> list[ServiceManifest]:
    """The Services of ``load_path_batch``."""
    return list(load_path_batch(path, autoscaler).services)


def load_path_batch(path: str | Path, autoscaler: AutoscalerConfig | None = None) -> Batch:
    """Load a manifest file, or every ``*.yaml``/``*.yml`` file of a directory in name order."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    elif root.is_file():
        files = [root]
    else:
        raise ManifestError([f"{root}: no such file or directory"])
    services: list[ServiceManifest] = []
    sources: list[EnvSource] = []
    errors: list[str] = []
    for file in files:
        try:
            batch = load_batch(file.read_text(), str(file), autoscaler)
        except ManifestError as exc:
            errors.extend(exc.messages)
            continue
        services.extend(batch.services)
        sources.extend(batch.sources)
    errors.extend(_duplicates(services))
    if errors:
        raise ManifestError(errors)
    return Batch(tuple(services), tuple(sources))


def _duplicates(services: list[ServiceManifest]) -> Iterator[str]:
    seen: set[tuple[str, str]] = set()
    for svc in services:
        if svc.key in seen:
            yield f"Service {svc.namespace}/{svc.name} is defined more than once"
        seen.add(svc.key)


def parse_service(
    doc: object, autoscaler: AutoscalerConfig | None = None, namespace: str = ""
) -> ServiceManifest:
    """Default and validate one decoded document; raises ``ManifestError`` listing all errors.

    ``namespace`` is used when the document names none (else ``default``). The returned
    manifest's ``warnings`` name the fields Sluice accepts but ignores (``message: path``).
    """
    if not isinstance(doc, dict):
        raise ManifestError([f"expected a Kubernetes object, got {type(doc).__name__}"])
    kind = doc.get("kind")
    if kind != KIND:
        raise ManifestError(
            [
                f'unsupported kind "{kind}": sluice applies {API_VERSION} {KIND}, and v1 '
                "ConfigMap and Secret for envFrom: kind"
            ]
        )
    problems, warnings = schema.check(doc)
    bad = {p.path for p in problems}
    parser = _Parser(autoscaler or AutoscalerConfig(), namespace)
    try:
        svc = parser.service(doc)
    except ManifestError:
        svc = None
    # A field the schema refused is reported once, in the schema's words.
    errors = [f"{p.message}: {p.path}" for p in problems]
    errors += [m for m in parser.errors if not _under(m.rsplit(": ", 1)[-1].split(", "), bad)]
    if errors or svc is None:
        raise ManifestError(errors)
    found = [f"{w.message}: {w.path}" for w in warnings] + parser.warnings
    return dataclasses.replace(svc, warnings=tuple(found))


def _under(paths: list[str], bad: set[str]) -> bool:
    return any(p == b or p.startswith((b + ".", b + "[")) for p in paths for b in bad)


class _Parser:
    """Walks one document, defaulting as it goes and collecting every error with its path."""

    def __init__(self, cfg: AutoscalerConfig, namespace: str = "") -> None:
        self.cfg = cfg
        self.namespace = namespace
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def err(self, message: str, *paths: str) -> None:
        self.errors.append(f"{message}: {', '.join(paths)}")

    def policy_error(self, exc: PolicyError) -> None:
        """A ``path: message`` from ``activator.affinity_config`` in this parser's order."""
        path, _, message = str(exc).partition(": ")
        self.err(message, path)

    def service(self, doc: dict[str, Any]) -> ServiceManifest:
        if doc.get("apiVersion") != API_VERSION:
            self.err(
                f'unsupported apiVersion "{doc.get("apiVersion")}", want {API_VERSION}',
                "apiVersion",
            )
        meta = self.mapping(doc, "metadata", "metadata")
        name = self.string(meta, "name", "metadata.name")
        if not name:
            self.err("missing field(s)", "metadata.name")
        elif not _is_label(name, _DNS1035):
            self.err(f'invalid value: "{name}": must be a DNS-1035 label', "metadata.name")
        namespace = self.string(meta, "namespace", "metadata.namespace")
        if namespace and self.namespace and namespace != self.namespace:
            self.err(
                f'the namespace from the provided object "{namespace}" does not match the '
                f'namespace "{self.namespace}" (-n)',
                "metadata.namespace",
            )
        namespace = namespace or self.namespace or DEFAULT_NAMESPACE
        if not _is_label(namespace, _DNS1123):
            self.err(
                f'invalid value: "{namespace}": must be a DNS-1123 label', "metadata.namespace"
            )
        labels = self.str_map(meta, "labels", "metadata.labels")
        annotations = self.str_map(meta, "annotations", "metadata.annotations")
        try:
            route_policy_from_annotations(annotations, "metadata.annotations", name)
        except PolicyError as exc:
            self.policy_error(exc)
        spec = self.mapping(doc, "spec", "spec")
        template = self.template(self.mapping(spec, "template", "spec.template"), name)
        traffic = self.traffic(spec.get("traffic"), "spec.traffic")
        if self.errors:
            raise ManifestError(self.errors)
        return ServiceManifest(name, template, namespace, labels, annotations, traffic)

    def template(self, tmpl: dict[str, Any], service: str) -> RevisionTemplate:
        meta = self.mapping(tmpl, "metadata", "spec.template.metadata")
        name = self.string(meta, "name", "spec.template.metadata.name")
        if name and service and not name.startswith(service + "-"):
            self.err(
                f'invalid value: "{name}" must have prefix "{service}-"',
                "spec.template.metadata.name",
            )
        elif name and not _is_label(name, _DNS1123):
            self.err(
                f'invalid value: "{name}": must be a DNS-1123 label', "spec.template.metadata.name"
            )
        annotations = self.str_map(meta, "annotations", "spec.template.metadata.annotations")
        self.errors.extend(
            annotation_errors(annotations, self.cfg, "spec.template.metadata.annotations")
        )
        try:
            server_timing_from_annotations(annotations, "spec.template.metadata.annotations")
        except PolicyError as exc:
            self.policy_error(exc)
        try:
            progress_deadline(annotations)
        except ValueError as exc:
            self.err(
                str(exc),
                f"spec.template.metadata.annotations[{PROGRESS_DEADLINE_ANNOTATION}]",
            )
        sp = "spec.template.spec"
        spec = self.mapping(tmpl, "spec", sp)
        cc = self.integer(spec, "containerConcurrency", f"{sp}.containerConcurrency", 0)
        if cc < 0:
            self.err(f"invalid value: {cc}", f"{sp}.containerConcurrency")
        elif cc > MAX_CONTAINER_CONCURRENCY:
            self.err(
                f"expected 0 <= {cc} <= {MAX_CONTAINER_CONCURRENCY}", f"{sp}.containerConcurrency"
            )
        timeouts: list[int] = []
        for key, default in (
            ("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS),
            ("responseStartTimeoutSeconds", 0),
            ("idleTimeoutSeconds", 0),
        ):
            value = self.integer(spec, key, f"{sp}.{key}", default)
            # A response can only start before the request times out.
            high = timeouts[0] if key == "responseStartTimeoutSeconds" else MAX_TIMEOUT_SECONDS
            if not 0 <= value <= high:
                self.err(f"expected 0 <= {value} <= {high}", f"{sp}.{key}")
            timeouts.append(value)
        containers = self.objects(spec, "containers", f"{sp}.containers")
        if not containers:
            self.err("missing field(s)", f"{sp}.containers")
            containers = [{"image": "-"}]
        elif len(containers) > 1:
            self.err(
                f"expected exactly one, got {len(containers)} "
                "(sluice runs single-container revisions)",
                f"{sp}.containers",
            )
        container = self.container(containers[0], f"{sp}.containers[0]")
        return RevisionTemplate(container, name, annotations, cc, *timeouts)

    def container(self, c: dict[str, Any], path: str) -> Container:
        image = self.string(c, "image", f"{path}.image")
        if not image:
            self.err("missing field(s)", f"{path}.image")
        env: list[EnvVar] = []
        for i, e in enumerate(self.objects(c, "env", f"{path}.env")):
            ep = f"{path}.env[{i}]"
            env_name = self.string(e, "name", f"{ep}.name")
            if not env_name:
                self.err("missing field(s)", f"{ep}.name")
            env.append(EnvVar(env_name, self.string(e, "value", f"{ep}.value")))
        ports = self.objects(c, "ports", f"{path}.ports")
        port, port_name = 0, ""
        if len(ports) > 1:
            self.err("more than one container port is set", f"{path}.ports")
        if ports:
            pp = f"{path}.ports[0]"
            port = self.integer(ports[0], "containerPort", f"{pp}.containerPort", 0)
            if "containerPort" not in ports[0]:
                self.err("missing field(s)", f"{pp}.containerPort")
            elif port in RESERVED_PORTS:
                self.err(f"{port} is a reserved port", f"{pp}.containerPort")
            elif not 0 < port < 65536:
                self.err(f"expected 1 <= {port} <= 65535", f"{pp}.containerPort")
            port_name = self.string(ports[0], "name", f"{pp}.name")
            if port_name not in PORT_NAMES:
                self.err(f"invalid value: {port_name}", f"{pp}.name")
        probe = self.probe(c.get("readinessProbe"), f"{path}.readinessProbe")
        if probe.port and probe.port != (port or DEFAULT_PORT):
            # As Knative's controller does, the probe goes to the one published port.
            self.warnings.append(
                f"ignored by sluice (the probe goes to the container port {port or DEFAULT_PORT},"
                f" the only one published): {path}.readinessProbe.{probe.handler}.port"
            )
        command = self.strings(c, "command", f"{path}.command")
        args = self.strings(c, "args", f"{path}.args")
        env_from = self.env_from(c, f"{path}.envFrom")
        limits = self.limits(c, f"{path}.resources.limits")
        return Container(image, command, args, tuple(env), port, port_name, probe, env_from, limits)

    def env_from(self, c: dict[str, Any], path: str) -> tuple[EnvFrom, ...]:
        out: list[EnvFrom] = []
        for i, e in enumerate(self.objects(c, "envFrom", path)):
            ep = f"{path}[{i}]"
            refs = [(kind, ref) for kind, ref in ENV_FROM_REFS.items() if ref in e]
            if len(refs) != 1:
                fields = [f"{ep}.{ref}" for _, ref in refs] or [f"{ep}.configMapRef"]
                self.err("expected exactly one of configMapRef, secretRef", *fields)
                continue
            kind, ref = refs[0]
            body = self.mapping(e, ref, f"{ep}.{ref}")
            name = self.string(body, "name", f"{ep}.{ref}.name")
            if not name:
                self.err("missing field(s)", f"{ep}.{ref}.name")
            optional = self.boolean(body, "optional", f"{ep}.{ref}.optional") or False
            out.append(EnvFrom(kind, name, self.string(e, "prefix", f"{ep}.prefix"), optional))
        return tuple(out)

    def limits(self, c: dict[str, Any], path: str) -> tuple[tuple[str, str], ...]:
        resources = self.mapping(c, "resources", path.rsplit(".", 1)[0])
        out: list[tuple[str, str]] = []
        for key, value in self.mapping(resources, "limits", path).items():
            try:
                parse_quantity(value)
            except (ValueError, TypeError) as exc:
                self.err(str(exc), f"{path}[{key}]")
                continue
            if key in LIMITS:
                out.append((str(key), str(value)))
            else:
                self.warnings.append(
                    f"ignored by sluice (only cpu and memory limits are applied): {path}[{key}]"
                )
        return tuple(out)

    def probe(self, raw: object, path: str) -> ReadinessProbe:
        if raw is None:
            return ReadinessProbe()
        if not isinstance(raw, dict):
            self.err("expected an object", path)
            return ReadinessProbe()
        handlers = [h for h in PROBE_HANDLERS if h in raw]
        if len(handlers) > 1:
            self.err("expected exactly one, got both", *(f"{path}.{h}" for h in handlers))
        handler = handlers[0] if handlers else "tcpSocket"
        hp = f"{path}.{handler}"
        body = self.mapping(raw, handler, hp)
        command = self.strings(body, "command", f"{hp}.command")
        if handler == "exec" and not command:
            self.err("missing field(s)", f"{hp}.command")
        headers = tuple(
            EnvVar(
                self.string(h, "name", f"{hp}.httpHeaders[{i}].name"),
                self.string(h, "value", f"{hp}.httpHeaders[{i}].value"),
            )
            for i, h in enumerate(self.objects(body, "httpHeaders", f"{hp}.httpHeaders"))
        )
        numbers: list[int] = []
        for key, default, low in (
            ("periodSeconds", 0, 0),
            ("timeoutSeconds", 0, 0),
            ("successThreshold", 1, 1),
            ("failureThreshold", 3, 1),
        ):
            value = self.integer(raw, key, f"{path}.{key}", default)
            if value < low:
                self.err(f"invalid value: {value}", f"{path}.{key}")
            numbers.append(value)
        return ReadinessProbe(
            handler,
            self.string(body, "path", f"{hp}.path") or "/",
            self.integer(body, "port", f"{hp}.port", 0),
            headers,
            command,
            *numbers,
        )

    def traffic(self, raw: object, path: str) -> tuple[TrafficEntry, ...]:
        if raw is None or raw == []:
            return (TrafficEntry(latest_revision=True, percent=100),)
        if not isinstance(raw, list):
            self.err("expected a list", path)
            return ()
        entries: list[TrafficEntry] = []
        tags: dict[str, int] = {}
        total = 0
        for i, t in enumerate(raw):
            tp = f"{path}[{i}]"
            if not isinstance(t, dict):
                self.err("expected an object", tp)
                continue
            for forbidden in ("configurationName", "url"):
                if forbidden in t:
                    self.err("must not set the field(s)", f"{tp}.{forbidden}")
            revision = self.string(t, "revisionName", f"{tp}.revisionName")
            latest = self.boolean(t, "latestRevision", f"{tp}.latestRevision")
            if latest is True and revision:
                self.err(
                    "expected exactly one, got both", f"{tp}.latestRevision", f"{tp}.revisionName"
                )
            elif latest is False and not revision:
                self.err(
                    "missing field(s) (latestRevision: false needs a revisionName)",
                    f"{tp}.revisionName",
                )
            percent = self.integer(t, "percent", f"{tp}.percent", 0)
            if not 0 <= percent <= 100:
                self.err(f"expected 0 <= {percent} <= 100", f"{tp}.percent")
            tag = self.string(t, "tag", f"{tp}.tag")
            if tag and not _is_label(tag, _DNS1035):
                self.err(
                    f'invalid key name "{tag}": a tag must be a DNS-1035 label (lower-case '
                    "letters, digits and '-', starting with a letter)",
                    f"{tp}.tag",
                )
            elif tag in tags:
                self.err(
                    f'Multiple definitions for "{tag}"', f"{path}[{tags[tag]}].tag", f"{tp}.tag"
                )
            elif tag:
                tags[tag] = i
            total += percent
            entries.append(
                TrafficEntry(revision, revision == "" if latest is None else latest, percent, tag)
            )
        if total != 100:
            self.err(f"Traffic targets sum to {total}, want 100", path)
        return tuple(entries)

    # Typed accessors: a wrong type is reported at its path and the default is used instead.

    def mapping(self, obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err("expected an object", path)
            return {}
        return value

    def objects(self, obj: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.err("expected a list of objects", path)
            return []
        return value

    def string(self, obj: dict[str, Any], key: str, path: str) -> str:
        value = obj.get(key)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.err(f"invalid value: {value!r} (expected a string)", path)
            return ""
        return str(value)

    def strings(self, obj: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.err("expected a list of strings", path)
            return ()
        return tuple(self.string({"v": v}, "v", f"{path}[{i}]") for i, v in enumerate(value))

    def str_map(self, obj: dict[str, Any], key: str, path: str) -> dict[str, str]:
        return {
            str(k): self.string(m, k, f"{path}[{k}]")
            for m in [self.mapping(obj, key, path)]
            for k in m
        }

    def integer(self, obj: dict[str, Any], key: str, path: str, default: int) -> int:
        value = obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(f"invalid value: {value!r} (expected an integer)", path)
            return default
        return value

    def boolean(self, obj: dict[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, bool):
            self.err(f"invalid value: {value!r} (expected true or false)", path)
            return None
        return value


def _is_label(value: str, pattern: re.Pattern[str]) -> bool:
    return len(value) <= 63 and pattern.match(value) is not None
