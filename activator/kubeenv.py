"""The environment of Knative's activator Deployment, read once at start-up (Kubernetes mode).

Knative v1.23.0's ``cmd/activator`` requires ``POD_NAME`` and ``POD_IP`` and, through its
libraries, ``SYSTEM_NAMESPACE``; the rest have defaults. ``load_kube_env`` is the only reader
and fails with one ``KubeEnvError`` line naming the variable:

=================================  ======================  ====================================
variable                           default                 use
=================================  ======================  ====================================
``POD_NAME``                       (required)              ``pod_name`` in stats and metrics
``POD_IP``                         (required)              our place in the public Endpoints
``SYSTEM_NAMESPACE``               (required)              ConfigMaps, the autoscaler's address
``CONFIG_LOGGING_NAME``            ``config-logging``      log level (``loglevel.activator``)
``CONFIG_OBSERVABILITY_NAME``      ``config-observability``  watched; logged when it changes
``PROBE_TIMEOUT``                  ``300ms``               deadline of one pod probe round
``PROBE_FREQUENCY``                ``200ms``               interval of probe rounds
``MAX_IDLE_PROXY_CONNS``           ``1000``                idle upstream connections, in all
``MAX_IDLE_PROXY_CONNS_PER_HOST``  ``100``                 idle upstream connections per pod
``CLUSTER_DOMAIN``                 see ``cluster_domain``  the cluster's DNS suffix
=================================  ======================  ====================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.dataplane.goduration import parse_duration

__all__ = ["SLUICE_INGRESS_CLASS", "KubeEnv", "KubeEnvError", "cluster_domain", "load_kube_env"]

#: Knative's ingress class for Sluice's ingress mode (``--ingress-class``).
SLUICE_INGRESS_CLASS = "sluice.ingress.networking.knative.dev"
RESOLV_CONF = Path("/etc/resolv.conf")
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
_INT = re.compile(r"[+-]?\d+\Z")


class KubeEnvError(ValueError):
    """A missing or invalid variable; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class KubeEnv:
    pod_name: str
    pod_ip: str
    system_namespace: str
    config_logging_name: str = "config-logging"
    config_observability_name: str = "config-observability"
    probe_timeout: float = 0.3
    probe_frequency: float = 0.2
    max_idle_conns: int = 1000
    max_idle_per_host: int = 100
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


def cluster_domain(env: Mapping[str, str], resolv_conf: Path = RESOLV_CONF) -> str:
    """The cluster's DNS suffix as knative.dev/pkg/network finds it: the ``svc.<domain>``
    entry of the resolver's ``search`` line, else ``CLUSTER_DOMAIN``, else ``cluster.local``."""
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] != ["search"]:
            continue
        for entry in fields[1:]:
            _, sep, domain = entry.partition("svc.")
            if sep and entry.startswith("svc.") and domain.strip("."):
                return domain.strip(".")
    return env.get("CLUSTER_DOMAIN", "").strip(".") or DEFAULT_CLUSTER_DOMAIN


def load_kube_env(env: Mapping[str, str], resolv_conf: Path = RESOLV_CONF) -> KubeEnv:
    """Knative's activator environment → ``KubeEnv``; raises ``KubeEnvError``."""

    def required(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise KubeEnvError(f"{name}: required variable is not set")
        return value

    def duration(name: str, default: float) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            seconds = parse_duration(raw)
        except ValueError:
            raise KubeEnvError(f'{name}: invalid duration "{raw}" (e.g. 300ms, 1s)') from None
        if seconds <= 0:
            raise KubeEnvError(f'{name}: invalid duration "{raw}": must be > 0')
        return seconds

    def count(name: str, default: int) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        if not _INT.match(raw) or int(raw) < 0:
            raise KubeEnvError(f'{name}: invalid value "{raw}": must be an integer >= 0')
        return int(raw)

    return KubeEnv(
        pod_name=required("POD_NAME"),
        pod_ip=required("POD_IP"),
        system_namespace=required("SYSTEM_NAMESPACE"),
        config_logging_name=env.get("CONFIG_LOGGING_NAME", "").strip() or "config-logging",
        config_observability_name=env.get("CONFIG_OBSERVABILITY_NAME", "").strip()
        or "config-observability",
        probe_timeout=duration("PROBE_TIMEOUT", 0.3),
        probe_frequency=duration("PROBE_FREQUENCY", 0.2),
        max_idle_conns=count("MAX_IDLE_PROXY_CONNS", 1000),
        max_idle_per_host=count("MAX_IDLE_PROXY_CONNS_PER_HOST", 100),
        cluster_domain=cluster_domain(env, resolv_conf),
    )
