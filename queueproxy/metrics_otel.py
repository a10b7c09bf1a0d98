"""Request metrics with Knative v1.19+'s OpenTelemetry names, as Prometheus text.

Under the v1.23.0 contract with ``OBSERVABILITY_CONFIG`` ``requestMetrics.protocol:
prometheus``, Knative's sidecar records two instruments (``pkg/queue/request_metric.go``,
meter ``knative.dev/serving/pkg/queue``) and serves them through OpenTelemetry's Prometheus
exporter with the ``UnderscoreEscapingWithSuffixes`` translation (``knative.dev/pkg
observability/metrics``). What a scrape of ``:9091/metrics`` shows, and what this module
writes:

* ``kn.serving.invocation.duration`` (histogram, unit ``s``) becomes
  ``kn_serving_invocation_duration_seconds``: one series per
  ``http_response_status_code``, explicit buckets 0.005 … 10 s. It times the user
  container's part of a request (after the breaker granted a slot), probes excluded.
  OpenTelemetry buckets are ``(lo, hi]``: a value equal to a bound counts in that bound.
* ``kn.serving.queue.depth`` (gauge, unit ``{request}``: a curly-brace annotation, so no
  suffix) becomes ``kn_serving_queue_depth``: the breaker's in-flight count when the
  latest request entered; present only with a breaker (CC >= 1) and after a request.
* Every series also carries the exporter's scope labels ``otel_scope_name``,
  ``otel_scope_schema_url`` and ``otel_scope_version`` (the last two empty); labels are
  sorted, except ``le``, which Go's text writer puts last.
* ``target_info`` (gauge, 1) carries the OpenTelemetry resource, dots turned into
  underscores: ``k8s_container_name``, ``k8s_namespace_name``, ``k8s_pod_name``,
  ``kn_service_name``/``kn_configuration_name``/``kn_revision_name`` (when not empty),
  ``service_name`` (service, else configuration, else revision) and
  ``service_instance_id`` (the pod). Go's SDK adds ``telemetry_sdk_*`` and
  ``service_version`` describing its own build; Sluice is not that SDK and leaves them out.
* Families come in name order, as Go's registry gathers them, with ``process_*`` among them.

Not written: the ``otelhttp`` server and client families
(``http_server_request_duration_seconds`` with ``kn_route_tag``, body sizes) and Go's
runtime families (``go_*``), which describe Go's HTTP stack and runtime.

Hot path: one dict lookup per status code finds the series; an observation is a
``bisect`` and two additions. The event loop is the only writer.
"""

from __future__ import annotations

from bisect import bisect_left

from proxy.dataplane.procmetrics import render_process_metrics
from proxy.dataplane.promtext import escape, format_go_float

SCOPE_NAME = "knative.dev/serving/pkg/queue"
CONTAINER_NAME = "queue-proxy"
#: ``latencyBounds`` of ``pkg/queue/request_metric.go``, in seconds.
LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
)  # fmt: skip
DURATION = "kn_serving_invocation_duration_seconds"
QUEUE_DEPTH = "kn_serving_queue_depth"
_SCOPE = f'otel_scope_name="{SCOPE_NAME}",otel_scope_schema_url="",otel_scope_version=""'
_LE = (*(format_go_float(float(b)) for b in LATENCY_BOUNDS_S), "+Inf")


class _Histogram:
    """Cumulative-on-render bucket counts and the sum of one label set."""

    __slots__ = ("buckets", "labels", "total")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.total = 0.0
        self.buckets = [0] * (len(LATENCY_BOUNDS_S) + 1)


class OtelRequestMetrics:
    """The ``kn_serving_*`` request metrics of one queue-proxy, plus ``process_*``.

    Same recording interface as ``queueproxy.metrics.RequestMetrics`` (the handler calls
    either); ``record_request`` has no OpenTelemetry counterpart here and records nothing.
    """

    def __init__(
        self,
        *,
        namespace: str,
        service: str,
        configuration: str,
        revision: str,
        pod_name: str,
        queue_depth_enabled: bool = False,
        process_metrics: bool = True,
    ) -> None:
        resource = {
            "k8s_container_name": CONTAINER_NAME,
            "k8s_namespace_name": namespace,
            "k8s_pod_name": pod_name,
            "service_instance_id": pod_name,
            "service_name": service or configuration or revision or pod_name,
        }
        for key, value in (
            ("kn_service_name", service),
            ("kn_configuration_name", configuration),
            ("kn_revision_name", revision),
        ):
            if value:
                resource[key] = value
        self._target_info = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(resource.items()))
        self._durations: dict[int, _Histogram] = {}
        self._queue_depth_enabled = queue_depth_enabled
        self._queue_depth: int | None = None
        self._process_metrics = process_metrics

    def record_app_request(self, status: int, latency_seconds: float) -> None:
        """Time one request the user container answered (never a probe)."""
        series = self._durations.get(status)
        if series is None:
            label = f'http_response_status_code="{status}",{_SCOPE}'
            series = self._durations[status] = _Histogram(label)
        series.total += latency_seconds
        series.buckets[bisect_left(LATENCY_BOUNDS_S, latency_seconds)] += 1

    def record_request(self, status: int, latency_seconds: float, route_tag: str) -> None:
        """The whole request's outcome: no ``kn_serving_*`` family records it."""

    def record_both(
        self, status: int, latency_seconds: float, route_tag: str, app_latency_seconds: float
    ) -> None:
        """``record_request`` and ``record_app_request`` in one call."""
        self.record_app_request(status, app_latency_seconds)

    def set_queue_depth(self, n: int) -> None:
        """Record the breaker's in-flight count; ignored unless queue depth is enabled."""
        if self._queue_depth_enabled:
            self._queue_depth = n

    def render(self) -> bytes:
        """The whole exposition in the Prometheus text format (0.0.4)."""
        out: list[str] = []
        if self._durations:
            out.append(f"# HELP {DURATION} The duration of task execution\n")
            out.append(f"# TYPE {DURATION} histogram\n")
            for status in sorted(self._durations):
                s = self._durations[status]
                cumulative = 0
                for le, n in zip(_LE, s.buckets, strict=True):
                    cumulative += n
                    out.append(f'{DURATION}_bucket{{{s.labels},le="{le}"}} {_num(cumulative)}\n')
                out.append(f"{DURATION}_sum{{{s.labels}}} {format_go_float(s.total)}\n")
                out.append(f"{DURATION}_count{{{s.labels}}} {_num(cumulative)}\n")
        if self._queue_depth is not None:
            out.append(f"# HELP {QUEUE_DEPTH} Number of current requests in the queue\n")
            out.append(f"# TYPE {QUEUE_DEPTH} gauge\n")
            out.append(f"{QUEUE_DEPTH}{{{_SCOPE}}} {_num(self._queue_depth)}\n")
        if self._process_metrics:
            out.append(render_process_metrics())
        out.append("# HELP target_info Target metadata\n# TYPE target_info gauge\n")
        out.append(f"target_info{{{self._target_info}}} 1\n")
        return "".join(out).encode()


def _num(n: int) -> str:
    # Go writes every sample value as a float64 ('g', shortest): 1e+06, not 1000000.
    return format_go_float(float(n))
