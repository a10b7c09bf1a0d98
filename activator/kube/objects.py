"""Projections of the Kubernetes objects the activator watches, and their decoders.

Each projection is a small frozen value holding only the fields the activator reads (Knative
v1.23 ``pkg/activator/net`` and ``pkg/activator/handler``), so the reflector's store costs a few
hundred bytes per object rather than the whole decoded JSON, and two projections compare equal
exactly when nothing the activator uses has changed: an update that touches only status or
managed fields produces no event downstream.

Decoders take the decoded JSON of one object (``dict`` from the watch stream) and return the
projection, or raise ``DecodeError`` with one line naming the field, e.g.
``spec.containerConcurrency: expected a non-negative integer, got "ten"``. They never trust
shapes: a list where a mapping belongs is an error, not a crash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "CONFIGURATION_LABEL",
    "DEFAULT_TIMEOUT_SECONDS",
    "FULL_DUPLEX_ANNOTATION",
    "PRIVATE_ENDPOINTS_SELECTOR",
    "PUBLIC_ENDPOINTS_SELECTOR",
    "REVISION_LABEL",
    "REVISION_UID_LABEL",
    "SERVICE_LABEL",
    "SERVICE_TYPE_LABEL",
    "SERVING_PORT_NAMES",
    "ConfigMapInfo",
    "DecodeError",
    "EndpointsInfo",
    "Key",
    "RevisionInfo",
    "ServiceInfo",
    "child_name",
    "decode_configmap",
    "decode_endpoints",
    "decode_revision",
    "decode_service",
    "join_host_port",
    "object_key",
    "port_name_for",
    "private_service_name",
]

#: ``(namespace, name)``; the namespace is ``""`` for cluster-scoped objects.
Key = tuple[str, str]

REVISION_LABEL: Final = "serving.knative.dev/revision"
REVISION_UID_LABEL: Final = "serving.knative.dev/revisionUID"
SERVICE_LABEL: Final = "serving.knative.dev/service"
CONFIGURATION_LABEL: Final = "serving.knative.dev/configuration"
SERVICE_TYPE_LABEL: Final = "networking.internal.knative.dev/serviceType"
FULL_DUPLEX_ANNOTATION: Final = "features.knative.dev/http-full-duplex"
#: Sluice's: cold starts of the revision answer with ``Server-Timing`` (``activator.coldstart``).
SERVER_TIMING_ANNOTATION: Final = "sluice.dev/server-timing"

#: The revision pods: Knative filters on both labels (the UID label only has to exist).
PRIVATE_ENDPOINTS_SELECTOR: Final = f"{SERVICE_TYPE_LABEL}=Private,{REVISION_UID_LABEL}"
#: The activators in front of each revision: the source of the activator count and index.
PUBLIC_ENDPOINTS_SELECTOR: Final = f"{SERVICE_TYPE_LABEL}=Public"

#: Knative's revision timeout when ``spec.timeoutSeconds`` is absent (the webhook defaults it).
DEFAULT_TIMEOUT_SECONDS: Final = 300

#: The Endpoints port names the activator routes to: ``http`` (HTTP/1) and ``http2`` (h2c).
SERVING_PORT_NAMES: Final = frozenset({"http", "http2"})

_MAX_NAME: Final = 63  # a DNS-1123 label
_MD5_HEX: Final = 32


class DecodeError(ValueError):
    """An object whose shape the activator cannot use; the message names the field."""


# -- shape helpers -----------------------------------------------------------------------


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if type(value) is dict:  # what json.loads makes; isinstance(Mapping) is an ABC check
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DecodeError(f"{path}: expected an object, got {type(value).__name__}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"{path}: expected a list, got {type(value).__name__}")
    return value


def _str(value: object, path: str, *, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise DecodeError(f"{path}: expected a string, got {type(value).__name__}")
    return value


def _int(value: object, path: str, *, default: int, minimum: int = 0) -> int:
    if value is None:
        return default
    # bool is an int in Python but never a valid JSON integer field.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DecodeError(f"{path}: expected an integer >= {minimum}, got {value!r}")
    return value


def _string_map(value: object, path: str) -> dict[str, str]:
    if type(value) is dict and all(type(v) is str for v in value.values()):
        return dict(value)
    out: dict[str, str] = {}
    for k, v in _mapping(value, path).items():
        out[str(k)] = _str(v, f"{path}[{k}]")
    return out


def object_key(obj: Mapping[str, Any]) -> Key:
    """``(metadata.namespace, metadata.name)``; raises ``DecodeError`` without a name."""
    meta = _mapping(obj.get("metadata"), "metadata")
    name = _str(meta.get("name"), "metadata.name")
    if not name:
        raise DecodeError("metadata.name: missing")
    return (_str(meta.get("namespace"), "metadata.namespace"), name)


def join_host_port(host: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: IPv6 literals are bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_name_for(protocol: str) -> str:
    """Knative's ``ServicePortName``: the Service/Endpoints port name of a protocol."""
    return "http2" if protocol == "h2c" else "http"


def child_name(parent: str, suffix: str) -> str:
    """Knative's ``kmeta.ChildName``: ``parent + suffix``, hashed to fit 63 characters.

    Too long, the parent keeps its first ``31 - len(suffix)`` characters followed by the md5 hex
    of the whole parent, then the suffix (so ``-private`` keeps 23 characters). A suffix of 31
    characters or more hashes parent and suffix together and drops trailing non-alphanumerics.
    """
    if len(parent) + len(suffix) <= _MAX_NAME:
        return parent + suffix
    head = _MAX_NAME - _MD5_HEX
    if head - len(suffix) <= 0:
        digest = hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
        out = parent[:head] + digest
        room = _MAX_NAME - len(out)
        if room > 0:
            out += suffix[:room]
        return out.rstrip("-._")
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: head - len(suffix)] + digest + suffix


def private_service_name(revision: str) -> str:
    """The name of a revision's private Service and Endpoints (``<rev>-private``)."""
    return child_name(revision, "-private")


# -- Revision ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    """What the activator reads from a ``serving.knative.dev/v1`` Revision."""

    namespace: str
    name: str
    container_concurrency: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    response_start_timeout_seconds: int = 0
    idle_timeout_seconds: int = 0
    #: ``h2c`` when the serving container's first port is named ``h2c``, else ``http1``.
    protocol: str = "http1"
    #: The serving container's readiness probe is ``exec``: the queue-proxy's answer does
    #: not cover it, so a pod is used only once Kubernetes calls it ready.
    exec_readiness_probe: bool = False
    #: The serving container has a ``startupProbe`` (run by the kubelet; same consequence).
    startup_probe: bool = False
    service: str = ""
    configuration: str = ""
    #: ``features.knative.dev/http-full-duplex: Enabled`` (case-insensitive).
    http_full_duplex: bool = False
    #: ``sluice.dev/server-timing: "true"`` (case-insensitive; Knative copies the template's
    #: annotations onto the Revision): cold starts answer with ``Server-Timing``.
    server_timing: bool = False

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def port_name(self) -> str:
        """The Endpoints/Service port name carrying this revision's traffic."""
        return port_name_for(self.protocol)

    @property
    def probe_optimisation(self) -> bool:
        """Knative's ``enableProbeOptimisation``: trust a queue-proxy 200 before K8s Ready."""
        return not (self.exec_readiness_probe or self.startup_probe)


def _serving_container(containers: list[Any]) -> Mapping[str, Any]:
    """Knative's ``GetContainer``: the only container, else the first one with ports."""
    if len(containers) == 1:
        return _mapping(containers[0], "spec.containers[0]")
    for i, c in enumerate(containers):
        container = _mapping(c, f"spec.containers[{i}]")
        if _list(container.get("ports"), f"spec.containers[{i}].ports"):
            return container
    return {}


def decode_revision(obj: Mapping[str, Any]) -> RevisionInfo:
    """Project a Revision; raises ``DecodeError`` naming the first unusable field."""
    namespace, name = object_key(obj)
    meta = _mapping(obj.get("metadata"), "metadata")
    labels = _string_map(meta.get("labels"), "metadata.labels")
    annotations = _string_map(meta.get("annotations"), "metadata.annotations")
    spec = _mapping(obj.get("spec"), "spec")
    container = _serving_container(_list(spec.get("containers"), "spec.containers"))
    ports = _list(container.get("ports"), "spec.containers[].ports")
    protocol = "http1"
    if ports and _mapping(ports[0], "spec.containers[].ports[0]").get("name") == "h2c":
        protocol = "h2c"
    readiness = _mapping(container.get("readinessProbe"), "spec.containers[].readinessProbe")
    return RevisionInfo(
        namespace=namespace,
        name=name,
        container_concurrency=_int(
            spec.get("containerConcurrency"), "spec.containerConcurrency", default=0
        ),
        timeout_seconds=_int(
            spec.get("timeoutSeconds"), "spec.timeoutSeconds", default=DEFAULT_TIMEOUT_SECONDS
        ),
        response_start_timeout_seconds=_int(
            spec.get("responseStartTimeoutSeconds"), "spec.responseStartTimeoutSeconds", default=0
        ),
        idle_timeout_seconds=_int(
            spec.get("idleTimeoutSeconds"), "spec.idleTimeoutSeconds", default=0
        ),
        protocol=protocol,
        exec_readiness_probe=readiness.get("exec") is not None,
        startup_probe=container.get("startupProbe") is not None,
        service=labels.get(SERVICE_LABEL, ""),
        configuration=labels.get(CONFIGURATION_LABEL, ""),
        http_full_duplex=annotations.get(FULL_DUPLEX_ANNOTATION, "").lower() == "enabled",
        server_timing=annotations.get(SERVER_TIMING_ANNOTATION, "").strip().lower() == "true",
    )


# -- Endpoints ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointsInfo:
    """A ``v1`` Endpoints object: per port name, the ready and not-ready ``ip:port`` sets."""

    namespace: str
    name: str
    #: Label ``serving.knative.dev/revision``: the revision these endpoints serve.
    revision: str = ""
    #: Label ``networking.internal.knative.dev/serviceType`` (``Private`` or ``Public``).
    service_type: str = ""
    ports: Mapping[str, tuple[frozenset[str], frozenset[str]]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def dests(self, port_name: str) -> tuple[frozenset[str], frozenset[str]]:
        """Knative's ``endpointsToDests``: ``(ready, not_ready)`` for subsets with that port."""
        return self.ports.get(port_name, (frozenset(), frozenset()))

    def ready_ips(self, port_name: str) -> frozenset[str]:
        """Knative's ``healthyAddresses``: the bare IPs of ready addresses with that port."""
        ready, _ = self.dests(port_name)
        return frozenset(d.rpartition(":")[0].strip("[]") for d in ready)


def _hosts(value: object, path: str) -> list[str]:
    """The addresses' IPs, IPv6 already bracketed for ``host:port``.

    Field paths are formatted only on the error path: this runs for every pod of every
    Endpoints event.
    """
    hosts = []
    for i, a in enumerate(_list(value, path)):
        ip = a.get("ip") if type(a) is dict else None
        if not isinstance(ip, str) or not ip:
            ip = _str(_mapping(a, f"{path}[{i}]").get("ip"), f"{path}[{i}].ip")
            raise DecodeError(f"{path}[{i}].ip: missing")
        hosts.append(f"[{ip}]" if ":" in ip else ip)
    return hosts


def _port(raw: object, s: int, p: int) -> tuple[str, int]:
    name = raw.get("name", "") if type(raw) is dict else None
    number = raw.get("port") if type(raw) is dict else None
    if isinstance(name, str) and type(number) is int and 0 < number < 65536:
        return name, number
    where = f"subsets[{s}].ports[{p}]"
    port = _mapping(raw, where)
    _str(port.get("name"), f"{where}.name")
    if port.get("port") is None:
        raise DecodeError(f"{where}.port: missing")
    raise DecodeError(f"{where}.port: expected a port number, got {port.get('port')!r}")


def decode_endpoints(
    obj: Mapping[str, Any], *, port_names: Collection[str] | None = None
) -> EndpointsInfo:
    """Project an Endpoints object; raises ``DecodeError`` naming the first unusable field.

    ``port_names`` keeps only those ports (``SERVING_PORT_NAMES`` is what the activator
    routes to), which saves most of the work and memory when pods also expose metrics ports;
    None keeps every named port.
    """
    namespace, name = object_key(obj)
    labels = _string_map(_mapping(obj.get("metadata"), "metadata").get("labels"), "labels")
    ready: dict[str, set[str]] = {}
    not_ready: dict[str, set[str]] = {}
    for s, raw in enumerate(_list(obj.get("subsets"), "subsets")):
        subset = _mapping(raw, f"subsets[{s}]")
        seen: set[str] = set()
        addresses = _hosts(subset.get("addresses"), f"subsets[{s}].addresses")
        pending = _hosts(subset.get("notReadyAddresses"), f"subsets[{s}].notReadyAddresses")
        for p, rawport in enumerate(_list(subset.get("ports"), f"subsets[{s}].ports")):
            pname, number = _port(rawport, s, p)
            # Knative takes the first port of a subset with the wanted name.
            if pname in seen or (port_names is not None and pname not in port_names):
                continue
            seen.add(pname)
            ready.setdefault(pname, set()).update([f"{h}:{number}" for h in addresses])
            not_ready.setdefault(pname, set()).update([f"{h}:{number}" for h in pending])
    ports = {n: (frozenset(ready[n]), frozenset(not_ready[n])) for n in ready}
    return EndpointsInfo(
        namespace=namespace,
        name=name,
        revision=labels.get(REVISION_LABEL, ""),
        service_type=labels.get(SERVICE_TYPE_LABEL, ""),
        ports=MappingProxyType(ports),
    )


# -- Service and ConfigMap ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A ``v1`` Service: its ClusterIP (``""`` or ``None`` headless) and ports by name."""

    namespace: str
    name: str
    cluster_ip: str = ""
    ports: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def dest(self, port_name: str) -> str | None:
        """``clusterIP:port`` for the named port (Knative's ``getDest``), or None."""
        port = self.ports.get(port_name)
        if port is None or not self.cluster_ip or self.cluster_ip == "None":
            return None
        return join_host_port(self.cluster_ip, port)


def decode_service(obj: Mapping[str, Any]) -> ServiceInfo:
    namespace, name = object_key(obj)
    spec = _mapping(obj.get("spec"), "spec")
    ports: dict[str, int] = {}
    for i, raw in enumerate(_list(spec.get("ports"), "spec.ports")):
        port = _mapping(raw, f"spec.ports[{i}]")
        pname = _str(port.get("name"), f"spec.ports[{i}].name")
        ports.setdefault(pname, _int(port.get("port"), f"spec.ports[{i}].port", default=0))
    return ServiceInfo(
        namespace=namespace,
        name=name,
        cluster_ip=_str(spec.get("clusterIP"), "spec.clusterIP"),
        ports=MappingProxyType(ports),
    )


@dataclass(frozen=True, slots=True)
class ConfigMapInfo:
    namespace: str
    name: str
    data: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


def decode_configmap(obj: Mapping[str, Any]) -> ConfigMapInfo:
    namespace, name = object_key(obj)
    return ConfigMapInfo(namespace, name, MappingProxyType(_string_map(obj.get("data"), "data")))
