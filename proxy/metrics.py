"""Small Prometheus helpers shared by the queue-proxy and the activator.

Metric names and labels belong to the components; this module only holds what they share:
Knative's latency buckets, a registry factory, text rendering and the status-class label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS_MS", "new_registry", "render", "status_class"]

#: Knative's request latency buckets, in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500,
    600, 700, 800, 900, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip

#: Prometheus text exposition 0.0.4, what Knative's exporter serves. prometheus_client's own
#: "latest" content type moved to 1.0.0; scrapers of Knative components expect 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def new_registry(process: bool = False) -> CollectorRegistry:
    """A fresh registry (never the global one), with ``process_*`` metrics if asked."""
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry's metrics as (body, content type) in Prometheus text format 0.0.4."""
    body: bytes = generate_latest(registry)
    return body, CONTENT_TYPE


def status_class(code: int) -> str:
    """Knative's ``response_code_class`` label: 200 → ``2xx``, 503 → ``5xx``."""
    return f"{code // 100}xx"
