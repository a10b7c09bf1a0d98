"""What one activator process is started with: ``Settings``, built by ``activator.main``.

Frozen and validated in ``__post_init__``; a bad value is one line naming its flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from activator.backends import PROBE_INTERVAL, PROBE_TIMEOUT
from activator.trust import ANYONE, NOBODY, RoutingTrust

__all__ = ["DRAIN_SECONDS", "MAX_IDLE", "MAX_IDLE_PER_HOST", "REPORT_INTERVAL", "Settings"]

#: Knative's ``MAX_IDLE_PROXY_CONNS_PER_HOST`` default.
MAX_IDLE_PER_HOST = 100
#: Knative's ``MAX_IDLE_PROXY_CONNS`` default.
MAX_IDLE = 1000
#: Knative's ``network.DefaultDrainTimeout``.
DRAIN_SECONDS = 45.0
#: Seconds between two reports to the scaler.
REPORT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one activator process is started with (built by ``main.parse_settings``)."""

    #: The static source file; None in Kubernetes mode.
    config: Path | None = None
    host: str = ""
    port: int = 8012
    #: Knative's h2c port; the same handler listens there (HTTP/1.1 until h2c lands).
    #: None: not opened (embedded and file modes).
    h2c_port: int | None = None
    metrics_port: int = 9090
    workers: int = 1
    #: This process's index among ``workers``; -1 in the supervising parent.
    worker_index: int = 0
    drain_seconds: float = DRAIN_SECONDS
    pod_name: str = "activator"
    #: This activator's address as the public Endpoints list it (Knative ``POD_IP``).
    pod_ip: str = ""
    cluster_domain: str = "cluster.local"
    max_idle_conns: int = MAX_IDLE
    max_idle_per_host: int = MAX_IDLE_PER_HOST
    log_level: str = "info"
    #: Overrides the configuration file's ``scaler.url`` when set.
    scaler_url: str | None = None
    #: Kubernetes mode: a kubeconfig instead of the in-cluster service account.
    kubeconfig: str | None = None
    #: Kubernetes mode: the autoscaler's websocket instead of its in-cluster address.
    autoscaler_url: str | None = None
    #: Kubernetes mode: also serve Knative Ingresses of this class (ingress mode).
    ingress_class: str | None = None
    #: Client networks whose ``Knative-Serving-Namespace``/``-Revision`` are believed
    #: (``activator.trust``); None: the mode's default (Kubernetes mode without an ingress
    #: class: everyone, as Knative's activator behind its ingress; otherwise nobody).
    trust_routing_headers_from: str | None = None
    probe_interval: float = PROBE_INTERVAL
    probe_timeout: float = PROBE_TIMEOUT
    report_interval: float = REPORT_INTERVAL
    #: ``--server-timing``: every cold start answers with its ``Server-Timing`` breakdown,
    #: whatever its revision's ``sluice.dev/server-timing`` annotation says.
    server_timing: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port: invalid value {self.port}: must be in [0, 65535]")
        if self.h2c_port is not None and not 0 <= self.h2c_port <= 65535:
            raise ValueError(f"--h2c-port: invalid value {self.h2c_port}: must be in [0, 65535]")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(
                f"--metrics-port: invalid value {self.metrics_port}: must be in [0, 65535]"
            )
        if self.workers < 1:
            raise ValueError(f"--workers: invalid value {self.workers}: must be >= 1")
        if self.drain_seconds < 0:
            raise ValueError(f"--drain-seconds: invalid value {self.drain_seconds}: must be >= 0")
        if not self.pod_name:
            raise ValueError("--pod-name: must not be empty")
        if self.trust_routing_headers_from is not None:
            RoutingTrust.parse(self.trust_routing_headers_from)  # raises naming the flag

    @property
    def routing_trust(self) -> RoutingTrust:
        """Whose routing headers the activator believes (see the field)."""
        if self.trust_routing_headers_from is not None:
            return RoutingTrust.parse(self.trust_routing_headers_from)
        if self.config is None and self.ingress_class is None:
            return ANYONE
        return NOBODY

    @property
    def own_metrics_port(self) -> int:
        """Worker ``i`` serves metrics on ``metrics_port + i`` (0 stays 0: any free port)."""
        if self.metrics_port == 0:
            return 0
        return self.metrics_port + max(0, self.worker_index)
