"""Prometheus request metrics with Knative v1.10.2's names, labels and exposition.

Knative exports these through OpenCensus, whose Prometheus exporter writes counters
*without* the ``_total`` suffix (``revision_request_count``). ``prometheus_client``
always appends ``_total`` to counter families, so the request metrics are kept here in
plain Python numbers and rendered by hand in the text format (0.0.4). Only the
``process_*`` basics come from ``proxy.dataplane.procmetrics`` (see there why not
prometheus_client).

Hot path: one dict lookup on ``(status, route_tag)`` finds a cached series; an
observation is a few integer additions and one ``bisect``. The event loop is the only
writer, so nothing is locked.

Exposition details kept from the OpenCensus exporter, because dashboards and alerts
written against Knative read them:

* labels are sorted by name; resource labels (``namespace_name``, ``service_name``,
  ``configuration_name``, ``revision_name``) appear on every series;
* a histogram observation ``v`` lands in the first bucket whose bound is *greater*
  than ``v`` (OpenCensus buckets are half-open ``[lo, hi)``), so a 5 ms request counts
  in ``le="10"``;
* numbers are printed as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` (``1e+06``);
* a series appears only after its first observation; ``revision_queue_depth`` carries
  the declared-but-unset ``response_code`` labels as empty strings.
"""

from __future__ import annotations

from bisect import bisect_right

from proxy.dataplane.procmetrics import render_process_metrics
from proxy.dataplane.promtext import (
    CONTENT_TYPE,
    LATENCY_BUCKETS_MS,
    Series,
    format_go_float,
    labels,
    render_counter,
    render_histogram,
    status_class,
)

__all__ = [
    "CONTAINER_NAME",
    "CONTENT_TYPE",
    "LATENCY_BUCKETS_MS",
    "MAX_ROUTE_TAGS",
    "RequestMetrics",
    "format_go_float",
    "route_tag",
]

CONTAINER_NAME = "queue-proxy"
_HELP_COUNT = "Requests routed to the queue-proxy"
_HELP_LATENCY = "Queue-proxy response latency (ms)"
_HELP_APP_COUNT = "Requests routed to the user container"
#: Distinct route tags kept before further unknown tags are folded into ``UNDEFINED``;
#: the tag comes from a request header, so an unbounded label set would be a memory leak.
MAX_ROUTE_TAGS = 1000
_RESERVED_TAGS = frozenset({"DISABLED", "DEFAULT", "UNDEFINED"})


def route_tag(tag_header: str | None, default_route_header: str | None) -> str:
    """The ``route_tag`` label from ``Knative-Serving-Tag`` and ``-Default-Route``.

    No tag: ``DEFAULT`` if the default-route header is set, else ``DISABLED``. A tag with
    default-route ``true`` (an unknown tag that fell through): ``UNDEFINED``. Otherwise
    the tag itself.
    """
    if not tag_header:
        return "DEFAULT" if default_route_header else "DISABLED"
    if default_route_header == "true":
        return "UNDEFINED"
    return tag_header


def _check_tag_value(what: str, value: str) -> None:
    # OpenCensus refuses tag values that are not printable ASCII or are over 255 long.
    if len(value) > 255 or not all(" " <= ch <= "~" for ch in value):
        raise ValueError(f"{what} {value!r} is not a valid metric label (printable ASCII, <= 255)")


class RequestMetrics:
    """The ``revision_*`` request metrics of one queue-proxy, plus ``process_*``.

    ``queue_depth_enabled`` (CC >= 1) controls whether ``revision_queue_depth`` exists.
    Raises ``ValueError`` if ``pod_name`` is not a valid label value (non-ASCII).
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
        _check_tag_value("pod name", pod_name)
        self._base = {
            "namespace_name": namespace,
            "service_name": service or "unknown",
            "configuration_name": configuration,
            "revision_name": revision,
            "pod_name": pod_name,
            "container_name": CONTAINER_NAME,
        }
        self._requests: dict[tuple[int, str], Series] = {}
        self._app_requests: dict[int, Series] = {}
        #: ``record_both``'s two series by route tag, then status: no key tuple per request.
        self._pairs: dict[str, dict[int, tuple[Series, Series]]] = {}
        self._route_tags: set[str] = set()
        self._queue_depth_enabled = queue_depth_enabled
        self._queue_depth: int | None = None
        self._process_metrics = process_metrics

    def record_request(self, status: int, latency_seconds: float, route_tag: str) -> None:
        """Count a request seen by the outer handler (probes must not be recorded)."""
        series = self._requests.get((status, route_tag))
        if series is None:
            series = self._new_request_series(status, route_tag)
        series.observe(int(latency_seconds * 1000))

    def record_app_request(self, status: int, latency_seconds: float) -> None:
        """Count a request that reached the user container (no ``route_tag`` label)."""
        series = self._app_requests.get(status)
        if series is None:
            series = self._app_requests[status] = Series(self._label_text(status, None))
        series.observe(int(latency_seconds * 1000))

    def record_both(
        self, status: int, latency_seconds: float, route_tag: str, app_latency_seconds: float
    ) -> None:
        """``record_request`` and ``record_app_request`` for one request with one status, in
        one call (inlined: this runs once per request). The app's latency is shorter than
        the request's when the request waited in the breaker's queue first."""
        ms = int(latency_seconds * 1000)
        bucket = bisect_right(LATENCY_BUCKETS_MS, ms)
        app_ms = int(app_latency_seconds * 1000)
        app_bucket = bucket if app_ms == ms else bisect_right(LATENCY_BUCKETS_MS, app_ms)
        by_status = self._pairs.get(route_tag)
        pair = by_status.get(status) if by_status is not None else None
        if pair is None:
            pair = self._pair(status, route_tag)
        series, app = pair
        series.total += ms
        series.buckets[bucket] += 1
        app.total += app_ms
        app.buckets[app_bucket] += 1

    def _pair(self, status: int, route_tag: str) -> tuple[Series, Series]:
        series = self._requests.get((status, route_tag))
        if series is None:
            series = self._new_request_series(status, route_tag)
        app = self._app_requests.get(status)
        if app is None:
            app = self._app_requests[status] = Series(self._label_text(status, None))
        if len(self._pairs) < MAX_ROUTE_TAGS + len(_RESERVED_TAGS) + 1:
            self._pairs.setdefault(route_tag, {})[status] = (series, app)
        return series, app

    def set_queue_depth(self, n: int) -> None:
        """Record the breaker's in-flight count; ignored unless queue depth is enabled."""
        if self._queue_depth_enabled:
            self._queue_depth = n

    def _new_request_series(self, status: int, tag: str) -> Series:
        if tag not in self._route_tags and tag not in _RESERVED_TAGS:
            if len(self._route_tags) >= MAX_ROUTE_TAGS:
                tag = "UNDEFINED"
                found = self._requests.get((status, tag))
                if found is not None:
                    return found
            else:
                self._route_tags.add(tag)
        series = self._requests[(status, tag)] = Series(self._label_text(status, tag))
        return series

    def _label_text(self, status: int, tag: str | None) -> str:
        pairs = dict(self._base)
        pairs["response_code"] = str(status)
        pairs["response_code_class"] = status_class(status)
        if tag is not None:
            pairs["route_tag"] = tag
        return labels(pairs)

    def render(self) -> bytes:
        """The whole exposition in the Prometheus text format (``CONTENT_TYPE``)."""
        out: list[str] = []
        reqs = list(self._requests.values())
        apps = list(self._app_requests.values())
        render_counter(out, "revision_request_count", "Requests routed to the queue-proxy", reqs)
        render_histogram(
            out, "revision_request_latencies", "Queue-proxy response latency (ms)", reqs
        )
        render_counter(
            out, "revision_app_request_count", "Requests routed to the user container", apps
        )
        render_histogram(
            out, "revision_app_request_latencies", "User-container response latency (ms)", apps
        )
        if self._queue_depth is not None:
            pairs = dict(self._base, response_code="", response_code_class="")
            out.append("# HELP revision_queue_depth Requests waiting for or holding a slot\n")
            out.append("# TYPE revision_queue_depth gauge\n")
            out.append(
                f"revision_queue_depth{{{labels(pairs)}}} "
                f"{format_go_float(float(self._queue_depth))}\n"
            )
        if self._process_metrics:
            out.append(render_process_metrics())
        return "".join(out).encode()
