"""Prometheus request metrics with Knative v1.10.2's names, labels and exposition.

Knative exports these through OpenCensus, whose Prometheus exporter writes counters
*without* the ``_total`` suffix (``revision_request_count``). ``prometheus_client``
always appends ``_total`` to counter families, so the request metrics are kept here in
plain Python numbers and rendered by hand in the text format (0.0.4). Only the
``process_*`` basics come from ``proxy.procmetrics`` (see there why not prometheus_client).

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
from decimal import Decimal

from proxy.procmetrics import render_process_metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency bucket bounds in milliseconds (Knative's ``defaultLatencyDistribution``).
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500,
    600, 700, 800, 900, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip

CONTAINER_NAME = "queue-proxy"
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


def format_go_float(value: float, exp_threshold: int = 6) -> str:
    """Format like Go's shortest ``'g'`` (``exp_threshold=6``) or ``%v`` (``21``).

    The shortest round-tripping digits are printed in plain notation unless the decimal
    exponent is below -4 or at least ``exp_threshold``, then as ``d.ddde+XX``.
    """
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    sign, digit_tuple, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    exp = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= exp_threshold:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{prefix}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return prefix + digits + "0" * (exp + 1 - len(digits))
    return f"{prefix}{digits[: exp + 1]}.{digits[exp + 1 :]}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs.items()))


def _check_tag_value(what: str, value: str) -> None:
    # OpenCensus refuses tag values that are not printable ASCII or are over 255 long.
    if len(value) > 255 or not all(" " <= ch <= "~" for ch in value):
        raise ValueError(f"{what} {value!r} is not a valid metric label (printable ASCII, <= 255)")


class _Series:
    """Count, sum and (non-cumulative) bucket counts of one label set."""

    __slots__ = ("buckets", "count", "labels", "total")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.count = 0
        self.total = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)

    def observe(self, ms: int) -> None:
        self.count += 1
        self.total += ms
        self.buckets[bisect_right(LATENCY_BUCKETS_MS, ms)] += 1


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
        self._requests: dict[tuple[int, str], _Series] = {}
        self._app_requests: dict[int, _Series] = {}
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
            series = self._app_requests[status] = _Series(self._label_text(status, None))
        series.observe(int(latency_seconds * 1000))

    def set_queue_depth(self, n: int) -> None:
        """Record the breaker's in-flight count; ignored unless queue depth is enabled."""
        if self._queue_depth_enabled:
            self._queue_depth = n

    def _new_request_series(self, status: int, tag: str) -> _Series:
        if tag not in self._route_tags and tag not in _RESERVED_TAGS:
            if len(self._route_tags) >= MAX_ROUTE_TAGS:
                tag = "UNDEFINED"
                found = self._requests.get((status, tag))
                if found is not None:
                    return found
            else:
                self._route_tags.add(tag)
        series = self._requests[(status, tag)] = _Series(self._label_text(status, tag))
        return series

    def _label_text(self, status: int, tag: str | None) -> str:
        pairs = dict(self._base)
        pairs["response_code"] = str(status)
        pairs["response_code_class"] = f"{status // 100}xx"
        if tag is not None:
            pairs["route_tag"] = tag
        return _labels(pairs)

    def render(self) -> bytes:
        """The whole exposition in the Prometheus text format (``CONTENT_TYPE``)."""
        out: list[str] = []
        reqs = list(self._requests.values())
        apps = list(self._app_requests.values())
        _counter(out, "revision_request_count", "Requests routed to the queue-proxy", reqs)
        _histogram(out, "revision_request_latencies", "Queue-proxy response latency (ms)", reqs)
        _counter(out, "revision_app_request_count", "Requests routed to the user container", apps)
        _histogram(
            out, "revision_app_request_latencies", "User-container response latency (ms)", apps
        )
        if self._queue_depth is not None:
            pairs = dict(self._base, response_code="", response_code_class="")
            out.append("# HELP revision_queue_depth Requests waiting for or holding a slot\n")
            out.append("# TYPE revision_queue_depth gauge\n")
            out.append(
                f"revision_queue_depth{{{_labels(pairs)}}} "
                f"{format_go_float(float(self._queue_depth))}\n"
            )
        if self._process_metrics:
            out.append(render_process_metrics())
        return "".join(out).encode()


def _counter(out: list[str], name: str, help_text: str, series: list[_Series]) -> None:
    if not series:
        return
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
    for s in series:
        out.append(f"{name}{{{s.labels}}} {s.count}\n")


def _histogram(out: list[str], name: str, help_text: str, series: list[_Series]) -> None:
    if not series:
        return
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
    for s in series:
        cumulative = 0
        for bound, n in zip(LATENCY_BUCKETS_MS, s.buckets, strict=False):
            cumulative += n
            out.append(f'{name}_bucket{{{s.labels},le="{format_go_float(bound)}"}} {cumulative}\n')
        out.append(f'{name}_bucket{{{s.labels},le="+Inf"}} {s.count}\n')
        out.append(f"{name}_sum{{{s.labels}}} {format_go_float(float(s.total))}\n")
        out.append(f"{name}_count{{{s.labels}}} {s.count}\n")
