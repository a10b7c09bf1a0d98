"""What one local "pod" runs: the user process and its queue-proxy, as pure values.

``build_pod_plan`` turns a revision (its template, its service, where its manifest lives) and a
set of free ports into the two command lines and environments, exactly as Knative's controller
fills the user container and the ``queue-proxy`` sidecar (reference §1.2), plus Sluice's port
overrides so that many pods share one loopback.

Local-process rules (documented in docs/tutorial.md):

* ``PORT`` is always a free port picked per pod, whatever ``containerPort`` says: every pod of
  every revision shares 127.0.0.1, so apps must listen on ``$PORT``.
* The process runs with its working directory set to the directory of the manifest that
  created the revision, so ``args: [apps/info.py]`` is relative to the manifest.
* A first ``command`` word of ``python``, ``python3`` or ``python3.X`` runs the interpreter that
  runs Sluice (``sys.executable``), so apps can import what Sluice's environment has.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from serving.containers import ContainerRuntime, container_name, default_runtime, run_argv
from serving.containers import RuntimeError_ as ContainerRuntimeError
from serving.expansion import expand_all, expand_env
from serving.manifest import Container, ReadinessProbe, RevisionTemplate, no_command_message

POD_IP = "127.0.0.1"
#: The queue-proxy's drain quiet period in embedded mode. Knative uses 30 s so that every
#: ingress has seen the endpoint go; here the activator is told at once, in-process, so one
#: second without requests is enough and keeps scale-down and Ctrl-C quick.
DRAIN_QUIET_SECONDS = 1.0
#: ``build_pod_plan``'s default: detect the container runtime only when an image must run.
_DETECT = object()
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")


class PodPlanError(ValueError):
    """The revision cannot run as a local process (e.g. it has no ``command``)."""


@dataclass(frozen=True, slots=True)
class PodPorts:
    user: int
    queue: int
    tls: int
    admin: int
    stats: int
    metrics: int

    @classmethod
    def from_list(cls, ports: list[int]) -> PodPorts:
        return cls(*ports[:6])

    COUNT = 6


@dataclass(frozen=True, slots=True)
class Process:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str


@dataclass(frozen=True, slots=True)
class PodPlan:
    name: str
    namespace: str
    service: str
    revision: str
    ports: PodPorts
    user: Process
    queue_proxy: Process
    #: For an image run by a container runtime: the command that prints ``true`` once the
    #: container is running (``podman inspect``); empty for a local process.
    running_check: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        """The queue-proxy address the activator sends traffic to."""
        return f"{POD_IP}:{self.ports.queue}"


def pod_name(revision: str, index: int) -> str:
    """Pod names as ``<revision>-deployment-<n>``; ``n`` counts pods started for the revision."""
    return f"{revision}-deployment-{index}"


def resolve_command(container: Container, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``command + args`` with ``$(VAR)`` expanded against the container's ``env`` (as the
    kubelet does) and ``python``/``python3`` mapped to the running interpreter."""
    message = no_command_message(container)
    if message is not None:
        raise PodPlanError(message)
    argv = list(expand_all([*container.command, *container.args], env or {}))
    if _PYTHON.match(argv[0]):
        argv[0] = sys.executable
    return tuple(argv)


def rewritten_probe(probe: ReadinessProbe, user_port: int) -> dict[str, object]:
    """The readiness probe as the controller hands it to queue-proxy: on the pod's loopback,
    pointed at the user port (Knative rewrites the port and fills the host)."""
    body = probe.to_dict()
    handler = probe.handler
    if handler in ("httpGet", "tcpSocket"):
        inner = dict(body[handler])
        inner["host"] = POD_IP
        inner["port"] = user_port
        body[handler] = inner
    return body


def user_env(
    container: Container,
    port: int,
    service: str,
    revision: str,
    env_from: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """``env_from`` (the resolved ``envFrom`` variables), then the container's env (values
    ``$(VAR)``-expanded in order, overriding), then Knative's variables, appended after the
    user's as the controller does."""
    env = dict(env_from)
    env.update(expand_env([(e.name, e.value) for e in container.env], env))
    env.update(
        {
            "PORT": str(port),
            "K_SERVICE": service,
            "K_CONFIGURATION": service,
            "K_REVISION": revision,
        }
    )
    return env


def queue_proxy_env(
    template: RevisionTemplate,
    *,
    namespace: str,
    service: str,
    revision: str,
    pod: str,
    ports: PodPorts,
    drain_quiet_seconds: float = DRAIN_QUIET_SECONDS,
) -> dict[str, str]:
    """Knative's sidecar environment (reference §1.2) plus the ``SLUICE_*`` overrides."""
    probe = rewritten_probe(template.container.readiness_probe, ports.user)
    return {
        "SERVING_NAMESPACE": namespace,
        "SERVING_SERVICE": service,
        "SERVING_CONFIGURATION": service,
        "SERVING_REVISION": revision,
        "SERVING_POD": pod,
        "SERVING_POD_IP": POD_IP,
        "QUEUE_SERVING_PORT": str(ports.queue),
        "QUEUE_SERVING_TLS_PORT": str(ports.tls),
        "USER_PORT": str(ports.user),
        "CONTAINER_CONCURRENCY": str(template.container_concurrency),
        "REVISION_TIMEOUT_SECONDS": str(template.timeout_seconds),
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": str(template.response_start_timeout_seconds),
        "REVISION_IDLE_TIMEOUT_SECONDS": str(template.idle_timeout_seconds),
        "SERVING_READINESS_PROBE": json.dumps(probe, separators=(",", ":")),
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "info",
        "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
        "SLUICE_ADMIN_PORT": str(ports.admin),
        "SLUICE_STATS_PORT": str(ports.stats),
        "SLUICE_METRICS_PORT": str(ports.metrics),
        "SLUICE_DRAIN_QUIET_SECONDS": f"{drain_quiet_seconds:g}",
        "SLUICE_BIND_HOST": POD_IP,
    }


def build_pod_plan(
    template: RevisionTemplate,
    *,
    namespace: str,
    service: str,
    revision: str,
    pod: str,
    ports: PodPorts,
    workdir: str,
    base_env: dict[str, str],
    queue_proxy_argv: tuple[str, ...] = (sys.executable, "-m", "queueproxy"),
    drain_quiet_seconds: float = DRAIN_QUIET_SECONDS,
    runtime: ContainerRuntime | object | None = _DETECT,
    env_from: Sequence[tuple[str, str]] = (),
    owner: str = "",
) -> PodPlan:
    """Both processes of one pod; raises ``PodPlanError`` when the container cannot run.

    A container with an ``image`` and no ``command`` runs through ``runtime`` (Podman or
    Docker; by default ``SLUICE_RUNTIME`` or whichever is installed); ``None`` means local
    processes only.

    ``base_env`` is the environment both processes inherit (Sluice's own, typically);
    ``env_from`` the resolved ``envFrom`` variables; ``owner`` labels and names containers
    after the ``sluice up`` that runs them (``serving.containers.owner_id``).
    """
    cwd = workdir if Path(workdir).is_dir() else str(Path.cwd())
    container = template.container
    if runtime is _DETECT and not container.command:
        try:
            runtime = default_runtime()
        except ContainerRuntimeError as exc:
            raise PodPlanError(str(exc)) from exc
    if isinstance(runtime, ContainerRuntime) and not container.command:
        # The image runs in a container: PORT is the container port, published on the
        # pod's free user port, so the queue-proxy reaches it on loopback as usual.
        container_env = user_env(container, container.port, service, revision, env_from)
        name = container_name(namespace, pod, owner)
        argv = run_argv(
            runtime,
            container,
            name=name,
            host_port=ports.user,
            env=container_env,
            args=expand_all(container.args, container_env),
            owner=owner,
        )
        app_env = dict(base_env)
        running_check: tuple[str, ...] = (
            *runtime.base,
            "container",
            "inspect",
            "--format",
            "{{.State.Running}}",
            name,
        )
    else:
        running_check = ()
        container_env = user_env(container, ports.user, service, revision, env_from)
        argv = resolve_command(container, container_env)
        app_env = {**base_env, **container_env}
    qp_env = {
        **base_env,
        **queue_proxy_env(
            template,
            namespace=namespace,
            service=service,
            revision=revision,
            pod=pod,
            ports=ports,
            drain_quiet_seconds=drain_quiet_seconds,
        ),
    }
    return PodPlan(
        name=pod,
        namespace=namespace,
        service=service,
        revision=revision,
        ports=ports,
        user=Process(argv, app_env, cwd),
        queue_proxy=Process(queue_proxy_argv, qp_env, cwd),
        running_check=running_check,
    )
