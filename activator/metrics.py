"""The activator's Prometheus metrics with Knative v1.10.2's names and labels (§2.11).

``prometheus_client`` appends ``_total`` to every counter, but Knative's OpenCensus exporter
writes ``activator_request_count`` bare, and dashboards read that name. So the request metrics
live here as plain numbers, rendered by ``proxy.dataplane.promtext`` in text format 0.0.4, with the
``process_*`` basics from ``proxy.dataplane.procmetrics``, exactly as the queue-proxy does.

Series, each carrying the revision's resource labels (``namespace_name``, ``service_name``
(``unknown`` when empty), ``configuration_name``, ``revision_name``) plus ``pod_name`` and
``container_name="activator"``:

* ``activator_request_count`` (counter) and ``activator_request_latencies`` (histogram, ms,
  Knative's buckets, observations land in the first bucket whose bound is *greater*), with
  ``response_code`` and ``response_code_class``: every request that resolved to a revision;
* ``activator_request_concurrency`` (gauge): the figure last reported to the autoscaler;
* ``activator_revision_queue_depth`` (gauge, Sluice's): requests waiting in the throttler;
* ``activator_scaler_dropped`` (counter, Sluice's, no labels but pod): stat payloads dropped;
* ``activator_cold_start_phase_latencies`` (histogram, ms, Sluice's, with ``phase``): where
  the time of each request that waited for capacity went (``activator.coldstart``);
* ``kn_activator_stats_conn_reachable{peer="autoscaler"}`` (gauge) and
  ``kn_activator_stats_conn_errors_total{peer="autoscaler"}`` (counter), Knative v1.23's
  OpenTelemetry names in Prometheus form: 1 while the autoscaler's websocket is connected,
  and the connections lost (Kubernetes mode).

The event loop is the only writer; nothing is locked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from activator.coldstart import Breakdown
from activator.model import Revision, RevisionKey
from proxy.dataplane.procmetrics import render_process_metrics
from proxy.dataplane.promtext import (
    CONTENT_TYPE,
    Series,
    escape,
    format_go_float,
    labels,
    render_counter,
    render_histogram,
    status_class,
)

__all__ = ["CONTAINER_NAME", "CONTENT_TYPE", "ActivatorMetrics"]

CONTAINER_NAME = "activator"


class ActivatorMetrics:
    """Request metrics of one activator process; ``render`` gives the exposition."""

    def __init__(
        self,
        pod_name: str,
        process_metrics: bool = True,
        dropped: Callable[[], int] | None = None,
    ) -> None:
        self.pod_name = pod_name
        self._requests: dict[tuple[RevisionKey, int], Series] = {}
        self._resource: dict[RevisionKey, dict[str, str]] = {}
        self._concurrency: dict[RevisionKey, float] = {}
        self._queue_depth: Callable[[], Iterable[tuple[Revision, int]]] | None = None
        self._dropped = dropped
        self._reachable: Callable[[], int] | None = None
        self._conn_errors: Callable[[], int] | None = None
        self._process_metrics = process_metrics
        self._cold: dict[tuple[RevisionKey, str], Series] = {}

    def _base(self, revision: Revision) -> dict[str, str]:
        base = self._resource.get(revision.key)
        if base is None:
            base = self._resource[revision.key] = {
                "namespace_name": revision.namespace,
                "service_name": revision.service or "unknown",
                "configuration_name": revision.configuration,
                "revision_name": revision.name,
                "pod_name": self.pod_name,
                "container_name": CONTAINER_NAME,
            }
        return base

    def record_request(self, revision: Revision, status: int, latency_seconds: float) -> None:
        series = self._requests.get((revision.key, status))
        if series is None:
            pairs = dict(
                self._base(revision),
                response_code=str(status),
                response_code_class=status_class(status),
            )
            series = self._requests[(revision.key, status)] = Series(labels(pairs))
        series.observe(int(latency_seconds * 1000))

    def record_cold_start(self, revision: Revision, record: Breakdown) -> None:
        """One request that waited for capacity: each phase into its histogram (ms)."""
        for phase, seconds in record.phases:
            series = self._cold.get((revision.key, phase))
            if series is None:
                pairs = dict(self._base(revision), phase=phase)
                series = self._cold[(revision.key, phase)] = Series(labels(pairs))
            series.observe(int(seconds * 1000))

    def set_concurrency(self, revision: Revision, value: float) -> None:
        self._base(revision)
        self._concurrency[revision.key] = value

    def watch_scaler(
        self,
        dropped: Callable[[], int],
        reachable: Callable[[], int],
        errors: Callable[[], int],
    ) -> None:
        """Export a scaler's drop count, whether its connection is up and how many
        connections it lost, read at render."""
        self._dropped = dropped
        self._reachable = reachable
        self._conn_errors = errors

    def watch_queue_depth(self, source: Callable[[], Iterable[tuple[Revision, int]]]) -> None:
        """Read per-revision queue depths from ``source`` at render time."""
        self._queue_depth = source

    def render(self) -> bytes:
        out: list[str] = []
        series = list(self._requests.values())
        render_counter(out, "activator_request_count", "The number of requests received", series)
        render_histogram(
            out, "activator_request_latencies", "The response time in millisecond", series
        )
        render_histogram(
            out,
            "activator_cold_start_phase_latencies",
            "Where the time of requests that waited for capacity went, per phase, in millisecond",
            list(self._cold.values()),
        )
        if self._concurrency:
            out.append(
                "# HELP activator_request_concurrency Concurrent requests reported to the "
                "autoscaler\n# TYPE activator_request_concurrency gauge\n"
            )
            for key, value in self._concurrency.items():
                out.append(
                    f"activator_request_concurrency{{{labels(self._resource[key])}}} "
                    f"{format_go_float(value)}\n"
                )
        if self._queue_depth is not None:
            depths = list(self._queue_depth())
            if depths:
                out.append(
                    "# HELP activator_revision_queue_depth Requests waiting for a pod\n"
                    "# TYPE activator_revision_queue_depth gauge\n"
                )
                for revision, depth in depths:
                    out.append(
                        f"activator_revision_queue_depth{{{labels(self._base(revision))}}} "
                        f"{depth}\n"
                    )
        if self._dropped is not None:
            out.append(
                "# HELP activator_scaler_dropped Stat payloads dropped on the way to the scaler\n"
                "# TYPE activator_scaler_dropped counter\n"
                f'activator_scaler_dropped{{pod_name="{escape(self.pod_name)}"}} '
                f"{self._dropped()}\n"
            )
        if self._reachable is not None and self._conn_errors is not None:
            out.append(
                "# HELP kn_activator_stats_conn_reachable Whether the autoscaler is reachable\n"
                "# TYPE kn_activator_stats_conn_reachable gauge\n"
                f'kn_activator_stats_conn_reachable{{peer="autoscaler"}} {self._reachable()}\n'
                "# HELP kn_activator_stats_conn_errors_total Connections to the autoscaler lost\n"
                "# TYPE kn_activator_stats_conn_errors_total counter\n"
                f'kn_activator_stats_conn_errors_total{{peer="autoscaler"}} {self._conn_errors()}\n'
            )
        if self._process_metrics:
            out.append(render_process_metrics())
        return "".join(out).encode()
