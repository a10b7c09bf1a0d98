"""Prometheus text exposition (format 0.0.4) written by hand, for the request metrics.

Why not ``prometheus_client`` for these: Knative's OpenCensus exporter writes counters without
the ``_total`` suffix ``prometheus_client`` always adds (``revision_request_count``,
``activator_request_count``), and dashboards read those exact names; and the queue-proxy
cannot afford prometheus_client's import in its memory budget (see ``proxy.dataplane.procmetrics``).
Numbers are formatted as Go does, since Knative's output comes from Go.

A ``Series`` is the count, sum and bucket counts of one label set; ``render_counter`` and
``render_histogram`` append families of series to an output list. No I/O, no third-party code.
"""

from __future__ import annotations

from bisect import bisect_right

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency bucket bounds in milliseconds (Knative's ``defaultLatencyDistribution``).
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500,
    600, 700, 800, 900, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip


def status_class(code: int) -> str:
    """``2xx``, ``5xx``... for a status code."""
    return f"{code // 100}xx"


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
    negative, digits, exp = _shortest(value)
    prefix = "-" if negative else ""
    if exp < -4 or exp >= exp_threshold:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{prefix}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return prefix + digits + "0" * (exp + 1 - len(digits))
    return f"{prefix}{digits[: exp + 1]}.{digits[exp + 1 :]}"


def _shortest(value: float) -> tuple[bool, str, int]:
    """(negative, digits, exponent) of a finite non-zero ``value``: the shortest digits that
    round-trip (``repr``'s), without leading or trailing zeros, and the decimal exponent of
    the first one (``1234.5`` -> ``(False, "12345", 3)``).

    Read off ``repr`` rather than through ``decimal``: ``_decimal`` alone is about 0.4 MiB
    of the sidecar's idle memory (issue 17).
    """
    text = repr(float(value))
    negative = text[0] == "-"
    if negative:
        text = text[1:]
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    raw = whole + frac
    digits = raw.lstrip("0")
    point = len(whole) + (int(exp_text) if exp_text else 0) - (len(raw) - len(digits))
    return negative, digits.rstrip("0"), point - 1


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(pairs: dict[str, str]) -> str:
    return ",".join(f'{k}="{escape(v)}"' for k, v in sorted(pairs.items()))


class Series:
    """Sum and (non-cumulative) bucket counts of one label set; the count is their sum."""

    __slots__ = ("buckets", "labels", "total")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.total = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def observe(self, ms: int) -> None:
        self.total += ms
        self.buckets[bisect_right(LATENCY_BUCKETS_MS, ms)] += 1


def render_counter(out: list[str], name: str, help_text: str, series: list[Series]) -> None:
    if not series:
        return
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
    for s in series:
        out.append(f"{name}{{{s.labels}}} {s.count}\n")


def render_histogram(out: list[str], name: str, help_text: str, series: list[Series]) -> None:
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
