"""Pure summaries of request records and pod samples: percentiles, series, shares, checks.

Nothing here does I/O or reads a clock, so every figure in ``summary.json`` can be
reproduced by hand from the CSV files and is unit-tested on made-up records.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.records import Record

PERCENTILES = (50, 90, 95, 99)
#: Knative's rollout-probe SLA: the request rate stays within 1 % of the target.
RATE_TOLERANCE = 0.01


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile by linear interpolation (numpy's default); NaN when empty."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def _r(x: float, nd: int = 3) -> float | None:
    """Rounded for JSON; NaN becomes ``None`` (JSON has no NaN)."""
    return None if math.isnan(x) else round(x, nd)


def latency_stats(values: Iterable[float]) -> dict[str, Any]:
    """count, min, mean, p50/p90/p95/p99 and max of latencies in ms."""
    s = sorted(values)
    out: dict[str, Any] = {"count": len(s)}
    out["min"] = _r(s[0]) if s else None
    out["mean"] = _r(sum(s) / len(s)) if s else None
    for p in PERCENTILES:
        out[f"p{p}"] = _r(percentile(s, p))
    out["max"] = _r(s[-1]) if s else None
    return out


def status_counts(records: Iterable[Record]) -> dict[str, int]:
    """Requests per HTTP status (as a string key); ``"error"`` for no answer at all."""
    c: Counter[str] = Counter(str(r.status) if r.status else "error" for r in records)
    return dict(sorted(c.items()))


def shares(records: Iterable[Record]) -> dict[str, float]:
    """Fraction of the successful answers each revision served."""
    c = Counter(r.revision for r in records if r.ok and r.revision)
    total = sum(c.values())
    return {rev: round(n / total, 4) for rev, n in sorted(c.items())} if total else {}


def share_error(observed: Mapping[str, float], expected: Mapping[str, float]) -> float:
    """The largest absolute difference between observed and expected shares."""
    keys = set(observed) | set(expected)
    return round(
        max((abs(observed.get(k, 0.0) - expected.get(k, 0.0)) for k in keys), default=0), 4
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    """Requests that started in ``[t, t + width)``, ``t`` in seconds since the run began."""

    t: float
    count: int
    errors: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    shares: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "count": self.count,
            "errors": self.errors,
            "rps": self.rps,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "shares": dict(self.shares),
        }


def series(
    records: Sequence[Record], t0: float, width: float = 1.0, ok_only: bool = True
) -> list[Bucket]:
    """Per-``width`` buckets from ``t0`` to the last request: rate, latency, errors, shares.

    Latency percentiles are of the successful requests, or of all when ``ok_only`` is false
    (to follow rejects, say).
    """
    if not records:
        return []
    groups: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        groups[max(0, int((r.t - t0) // width))] += [r]
    out = []
    for i in range(max(groups) + 1):
        rs = groups.get(i, [])
        lat = sorted(r.latency_ms for r in rs if r.ok or not ok_only)
        out.append(
            Bucket(
                t=round(i * width, 3),
                count=len(rs),
                errors=sum(not r.ok for r in rs),
                rps=round(len(rs) / width, 2),
                p50=_r(percentile(lat, 50)),
                p95=_r(percentile(lat, 95)),
                p99=_r(percentile(lat, 99)),
                shares=shares(rs),
            )
        )
    return out


def between(records: Iterable[Record], start: float, end: float) -> list[Record]:
    return [r for r in records if start <= r.t < end]


def request_summary(records: Sequence[Record]) -> dict[str, Any]:
    """The usual block: counts, statuses, failures, rate and latency of the successes."""
    ok = [r.latency_ms for r in records if r.ok]
    span = (records[-1].t - records[0].t) if len(records) > 1 else 0.0
    return {
        "requests": len(records),
        "ok": len(ok),
        "failures": len(records) - len(ok),
        "statuses": status_counts(records),
        "rps": round(len(records) / span, 2) if span > 0 else None,
        "latency_ms": latency_stats(ok),
    }


def overload_summary(records: Sequence[Record]) -> dict[str, Any]:
    """What overload looks like: the share answered 503 and how fast rejects come back."""
    rejects = [r for r in records if r.status == 503]
    accepted = [r for r in records if r.ok]
    other = len(records) - len(rejects) - len(accepted)
    span = (records[-1].t - records[0].t) if len(records) > 1 else 0.0
    return {
        "requests": len(records),
        "accepted": len(accepted),
        "rejected_503": len(rejects),
        "other_failures": other,
        "reject_share": round(len(rejects) / len(records), 4) if records else None,
        "accepted_rps": round(len(accepted) / span, 2) if span > 0 else None,
        "reject_latency_ms": latency_stats(r.latency_ms for r in rejects),
        "accepted_latency_ms": latency_stats(r.latency_ms for r in accepted),
    }


def added_latency(
    hops: Mapping[str, Mapping[str, Any]],
    baseline: str,
    keys: Sequence[str] = ("p50", "p95", "p99"),
) -> dict[str, dict[str, float | None]]:
    """Each hop's latency percentiles minus the baseline's (ms), e.g. queue-proxy vs direct."""
    base = hops[baseline]
    out: dict[str, dict[str, float | None]] = {}
    for name, stats in hops.items():
        if name == baseline:
            continue
        out[name] = {
            k: None if stats.get(k) is None or base.get(k) is None else round(stats[k] - base[k], 3)
            for k in keys
        }
    return out


def rate_check(
    requests: int, elapsed_s: float, target_rps: float, tolerance: float = RATE_TOLERANCE
) -> dict[str, Any]:
    """Achieved rate against the target; ``within`` is the SLA verdict."""
    achieved = requests / elapsed_s if elapsed_s > 0 else 0.0
    deviation = (achieved - target_rps) / target_rps if target_rps else math.inf
    return {
        "target_rps": target_rps,
        "achieved_rps": round(achieved, 2),
        "deviation": round(deviation, 5),
        "tolerance": tolerance,
        "within": abs(deviation) <= tolerance,
    }


def elapsed(records: Sequence[Record]) -> float:
    """From the first request's start to the last one's end, in seconds."""
    if not records:
        return 0.0
    end = max(r.t + r.latency_ms / 1e3 for r in records)
    return end - records[0].t


def pods_summary(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per revision: the most pods desired/actual/ready seen and every pod name seen."""
    out: dict[str, Any] = {}
    for s in samples:
        rev = out.setdefault(
            s["revision"], {"max_desired": 0, "max_actual": 0, "max_ready": 0, "pods": set()}
        )
        rev["max_desired"] = max(rev["max_desired"], s["desired"])
        rev["max_actual"] = max(rev["max_actual"], s["actual"])
        rev["max_ready"] = max(rev["max_ready"], s["ready"])
        rev["pods"].update(s.get("pods", ()))
    for rev in out.values():
        rev["pods"] = sorted(rev["pods"])
    return out
