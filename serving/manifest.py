"""Knative ``serving.knative.dev/v1`` Service manifests as frozen values.

The subset Sluice runs: metadata, one revision template (annotations, containerConcurrency,
the three timeouts, one container) and the traffic list. ``serving.manifest_loader`` turns
YAML into these values with Knative's defaulting and validation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from activator.model import DEFAULT_TIMEOUT_SECONDS

API_VERSION = "serving.knative.dev/v1"
KIND = "Service"
DEFAULT_NAMESPACE = "default"
MAX_CONTAINER_CONCURRENCY = 1000
MAX_TIMEOUT_SECONDS = 600
#: Knative gives the user container ``PORT=8080`` when it declares no port.
DEFAULT_PORT = 8080
#: Ports the queue-proxy owns inside a pod; the user container may not take them.
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091})
PORT_NAMES = ("", "http1", "h2c")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec")


class ManifestError(ValueError):
    """A manifest (or a set of them) was refused. ``messages`` holds every problem found."""

    def __init__(self, messages: list[str] | tuple[str, ...]) -> None:
        self.messages = tuple(messages)
        super().__init__("validation failed: " + "\n".join(self.messages))


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    value: str = ""


@dataclass(frozen=True, slots=True)
class EnvFrom:
    """One ``envFrom`` entry: every key of a ConfigMap or Secret, ``prefix`` prepended."""

    kind: str  # "ConfigMap" or "Secret"
    name: str
    prefix: str = ""
    optional: bool = False

    def to_dict(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.name}
        if self.optional:
            ref["optional"] = True
        out: dict[str, Any] = {ENV_FROM_REFS[self.kind]: ref}
        if self.prefix:
            out["prefix"] = self.prefix
        return out


#: ``envFrom`` reference field per object kind.
ENV_FROM_REFS = {"ConfigMap": "configMapRef", "Secret": "secretRef"}


@dataclass(frozen=True, slots=True)
class ReadinessProbe:
    """The container's readiness probe; Knative's default is a TCP probe on the user port.

    ``port`` 0 means the container port. ``period_seconds`` 0 is Knative's aggressive probing
    and ``timeout_seconds`` 0 leaves the prober's default.
    """

    handler: str = "tcpSocket"
    path: str = "/"
    port: int = 0
    http_headers: tuple[EnvVar, ...] = ()
    command: tuple[str, ...] = ()
    period_seconds: int = 0
    timeout_seconds: int = 0
    success_threshold: int = 1
    failure_threshold: int = 3

    def to_dict(self) -> dict[str, Any]:
        """Kubernetes' JSON shape (what queue-proxy's ``SERVING_READINESS_PROBE`` carries)."""
        body: dict[str, Any]
        if self.handler == "httpGet":
            body = {"path": self.path}
            if self.http_headers:
                body["httpHeaders"] = [
                    {"name": h.name, "value": h.value} for h in self.http_headers
                ]
        elif self.handler == "exec":
            body = {"command": list(self.command)}
        else:
            body = {}
        if self.port and self.handler != "exec":
            body["port"] = self.port
        return {
            self.handler: body,
            "periodSeconds": self.period_seconds,
            "timeoutSeconds": self.timeout_seconds,
            "successThreshold": self.success_threshold,
            "failureThreshold": self.failure_threshold,
        }


@dataclass(frozen=True, slots=True)
class Container:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    container_port: int = 0
    port_name: str = ""
    readiness_probe: ReadinessProbe = field(default_factory=ReadinessProbe)
    env_from: tuple[EnvFrom, ...] = ()
    #: ``resources.limits`` Sluice passes to a container runtime: ``(("cpu", "500m"), ...)``.
    limits: tuple[tuple[str, str], ...] = ()

    @property
    def port(self) -> int:
        """The port the process must listen on (``PORT``), 8080 unless one is declared."""
        return self.container_port or DEFAULT_PORT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image}
        if self.command:
            out["command"] = list(self.command)
        if self.args:
            out["args"] = list(self.args)
        if self.env:
            out["env"] = [{"name": e.name, "value": e.value} for e in self.env]
        if self.env_from:
            out["envFrom"] = [e.to_dict() for e in self.env_from]
        if self.limits:
            out["resources"] = {"limits": dict(self.limits)}
        if self.container_port:
            port: dict[str, Any] = {"containerPort": self.container_port}
            if self.port_name:
                port["name"] = self.port_name
            out["ports"] = [port]
        out["readinessProbe"] = self.readiness_probe.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class RevisionTemplate:
    """``spec.template``: what one immutable revision is made of. ``name`` "" means generated."""

    container: Container
    name: str = ""
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    container_concurrency: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    response_start_timeout_seconds: int = 0
    idle_timeout_seconds: int = 0

    def spec_dict(self) -> dict[str, Any]:
        return {
            "containerConcurrency": self.container_concurrency,
            "timeoutSeconds": self.timeout_seconds,
            "responseStartTimeoutSeconds": self.response_start_timeout_seconds,
            "idleTimeoutSeconds": self.idle_timeout_seconds,
            "containers": [self.container.to_dict()],
        }

    def to_dict(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if self.name:
            metadata["name"] = self.name
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {"metadata": metadata, "spec": self.spec_dict()}

    def fingerprint(self) -> str:
        """A stable hash of the defaulted spec and the annotations (not the name)."""
        body = {"annotations": self.annotations, "spec": self.spec_dict()}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TrafficEntry:
    """One defaulted ``spec.traffic`` entry; ``tag`` "" means untagged."""

    revision_name: str = ""
    latest_revision: bool = True
    percent: int = 0
    tag: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"latestRevision": self.latest_revision, "percent": self.percent}
        if self.revision_name:
            out["revisionName"] = self.revision_name
        if self.tag:
            out["tag"] = self.tag
        return out


@dataclass(frozen=True, slots=True)
class ServiceManifest:
    """A parsed, defaulted and validated Knative Service."""

    name: str
    template: RevisionTemplate
    namespace: str = DEFAULT_NAMESPACE
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    traffic: tuple[TrafficEntry, ...] = (TrafficEntry(percent=100),)
    #: Fields accepted but ignored, one line each (``[file:line: ]message: path``).
    warnings: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def template_fingerprint(self) -> str:
        """Hash deciding whether an apply needs a new revision; traffic is not part of it."""
        return self.template.fingerprint()

    def to_dict(self) -> dict[str, Any]:
        """The defaulted manifest; ``parse_service(to_dict())`` gives back an equal value."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": {
                "template": self.template.to_dict(),
                "traffic": [t.to_dict() for t in self.traffic],
            },
        }


def no_command_message(container: Container) -> str | None:
    """Why the embedded runner cannot start ``container``, or ``None`` if it can.

    A missing ``command`` is valid Knative (the image's entrypoint runs), but embedded mode
    runs local processes, not images.
    """
    if container.command:
        return None
    return (
        "container has no command: the embedded mode runs local processes and does not run "
        f"images (image {container.image} recorded)"
    )
