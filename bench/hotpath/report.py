"""Pure summarising and rendering: runs -> medians -> ratios to nginx (and, for Sluice's
queue-proxy, to Knative's Go queue-proxy) -> JSON and Markdown.

Nothing here measures or does I/O, so it is unit-tested on hand-made values.

Besides the median, each load point keeps its best round: the lowest CPU per request of its
runs. On a shared host, interference only ever adds CPU time, so the lowest of several runs
is the closest to what the code itself costs (the reasoning of ``timeit``'s documentation);
its ratio to nginx's best round is reported next to the ratio of medians, never instead.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

BASELINE = "nginx"
#: Knative's Go sidecar: Sluice's queue-proxy targets are also divided by the Go target of
#: the same containerConcurrency (``queue-proxy-cc10`` by ``go-queue-proxy-cc10``).
GO_PREFIX = "go-"
SLUICE_QP_PREFIX = "queue-proxy-cc"
#: Load points, in the order they are measured and reported.
SATURATION = "saturation_c32"
FIXED_RATE = "rate_1000"
SATURATION_C50 = "saturation_c50"
#: Foreign CPU (as a share of one core over a run) above which the Markdown warns.
NOISE_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class Run:
    """One load-generator run against one target."""

    rps: float
    requests: int
    duration_s: float
    cpu_us_per_req: float | None
    backend_cpu_us_per_req: float | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    errors: int = 0
    non_2xx: int = 0
    #: CPU seconds the machine spent on anything but target, backend and load generator:
    #: other tenants' work that may have disturbed the run.
    foreign_cpu_s: float | None = None


@dataclass(frozen=True, slots=True)
class Point:
    """The medians of the runs at one load point, and its CPU ratio to the baseline."""

    rps: float
    cpu_us_per_req: float | None
    backend_cpu_us_per_req: float | None
    latency_ms: Mapping[str, float]
    runs: tuple[Run, ...]
    ratio_to_nginx: float | None = None
    #: The lowest CPU per request of the runs (see the module docstring), and its ratio to
    #: the baseline's lowest.
    best_cpu_us_per_req: float | None = None
    best_ratio_to_nginx: float | None = None
    #: Sluice's queue-proxy targets only: the same two ratios to Knative's Go sidecar.
    ratio_to_go: float | None = None
    best_ratio_to_go: float | None = None


@dataclass(frozen=True, slots=True)
class TargetResult:
    name: str
    status: str  # "ok", "skipped" or "failed"
    note: str = ""
    cpu_of: str = "proxy"
    startup_s: float | None = None
    idle_rss_kib: int | None = None
    points: Mapping[str, Point] = field(default_factory=dict)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(runs: Sequence[Run]) -> Point:
    """Per-field medians over ``runs`` (each field independently), keeping the raw runs."""
    if not runs:
        raise ValueError("summarise needs at least one run")
    keys = sorted({k for r in runs for k in r.latency_ms}, key=_pct_order)
    latency = {k: median(r.latency_ms.get(k) for r in runs) for k in keys}
    return Point(
        rps=median(r.rps for r in runs) or 0.0,
        cpu_us_per_req=median(r.cpu_us_per_req for r in runs),
        backend_cpu_us_per_req=median(r.backend_cpu_us_per_req for r in runs),
        latency_ms={k: v for k, v in latency.items() if v is not None},
        runs=tuple(runs),
        best_cpu_us_per_req=min(
            (r.cpu_us_per_req for r in runs if r.cpu_us_per_req is not None), default=None
        ),
    )


def _pct_order(key: str) -> float:
    try:
        return float(key.lstrip("p"))
    except ValueError:
        return float("inf")


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def with_ratios(results: Sequence[TargetResult], baseline: str = BASELINE) -> list[TargetResult]:
    """Fill ``ratio_to_nginx`` for every proxy target's load point that the baseline also has.

    ``direct`` charges the backend, not a proxy, so it gets no ratio.
    """
    base = next((r for r in results if r.name == baseline and r.status == "ok"), None)
    out: list[TargetResult] = []
    for res in results:
        if base is None or res.cpu_of != "proxy":
            out.append(res)
            continue
        points = {}
        for key, pt in res.points.items():
            base_pt = base.points.get(key)
            points[key] = replace(
                pt,
                ratio_to_nginx=ratio(
                    pt.cpu_us_per_req, base_pt.cpu_us_per_req if base_pt else None
                ),
                best_ratio_to_nginx=ratio(
                    pt.best_cpu_us_per_req, base_pt.best_cpu_us_per_req if base_pt else None
                ),
            )
        out.append(replace(res, points=points))
    return _with_go_ratios(out)


def _with_go_ratios(results: list[TargetResult]) -> list[TargetResult]:
    """Fill ``ratio_to_go`` for ``queue-proxy-ccN`` from ``go-queue-proxy-ccN``'s points."""
    go = {r.name: r for r in results if r.name.startswith(GO_PREFIX) and r.status == "ok"}
    out: list[TargetResult] = []
    for res in results:
        twin = go.get(GO_PREFIX + res.name) if res.name.startswith(SLUICE_QP_PREFIX) else None
        if twin is None:
            out.append(res)
            continue
        points = {}
        for key, pt in res.points.items():
            go_pt = twin.points.get(key)
            points[key] = replace(
                pt,
                ratio_to_go=ratio(pt.cpu_us_per_req, go_pt.cpu_us_per_req if go_pt else None),
                best_ratio_to_go=ratio(
                    pt.best_cpu_us_per_req, go_pt.best_cpu_us_per_req if go_pt else None
                ),
            )
        out.append(replace(res, points=points))
    return out


def to_json(results: Sequence[TargetResult], environment: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "environment": dict(environment),
        "targets": {r.name: asdict(r) for r in results},
    }


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cpu_cell(res: TargetResult, pt: Point) -> str:
    cell = _num(pt.cpu_us_per_req, ".1f")
    return f"{cell} (backend)" if res.cpu_of == "backend" and pt.cpu_us_per_req else cell


def render_markdown(results: Sequence[TargetResult], environment: Mapping[str, Any]) -> str:
    """The short human summary: saturation, ~1000 req/s, c50 latency, queue-proxy footprint."""
    ok = [r for r in results if r.status == "ok"]
    env = environment
    lines = [
        "# Hot path: CPU per request on loopback",
        "",
        f"{env.get('cpu_count', '?')} CPUs; pinning: {env.get('pinning', '?')}; "
        f"backend: {env.get('backend', '?')}; "
        f"{env.get('runs', '?')} runs \u00d7 {env.get('duration_s', '?')} s, medians.",
        "",
        "## Saturation (wrk -t1 -c32)",
        "",
        "| target | req/s | CPU µs/req | \u00d7 nginx | best round µs/req | \u00d7 nginx "
        "| p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok:
        if (pt := r.points.get(SATURATION)) is not None:
            lines.append(
                f"| {r.name} | {pt.rps:,.0f} | {_cpu_cell(r, pt)} | "
                f"{_num(pt.ratio_to_nginx, '.2f')} | {_num(pt.best_cpu_us_per_req, '.1f')} | "
                f"{_num(pt.best_ratio_to_nginx, '.2f')} | {_num(pt.latency_ms.get('p99'), '.2f')} |"
            )
    rate_rows = [(r, r.points[FIXED_RATE]) for r in ok if FIXED_RATE in r.points]
    if rate_rows:
        lines += [
            "",
            "## Fixed rate ~1000 req/s (hey -c10 -q100)",
            "",
            "| target | req/s | CPU µs/req | \u00d7 nginx | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r, pt in rate_rows:
            lines.append(
                f"| {r.name} | {pt.rps:,.0f} | {_cpu_cell(r, pt)} | "
                f"{_num(pt.ratio_to_nginx, '.2f')} | {_num(pt.latency_ms.get('p50'), '.2f')} | "
                f"{_num(pt.latency_ms.get('p99'), '.2f')} |"
            )
    c50_rows = [(r, r.points[SATURATION_C50]) for r in ok if SATURATION_C50 in r.points]
    if c50_rows:
        lines += [
            "",
            "## Saturation with 50 connections (wrk -t1 -c50 --latency)",
            "",
            "| target | req/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for r, pt in c50_rows:
            lines.append(
                f"| {r.name} | {pt.rps:,.0f} | {_num(pt.latency_ms.get('p50'), '.2f')} | "
                f"{_num(pt.latency_ms.get('p99'), '.2f')} |"
            )
    go_rows = [
        (r, key, pt)
        for r in ok
        for key in (SATURATION, FIXED_RATE)
        if (pt := r.points.get(key)) is not None and pt.ratio_to_go is not None
    ]
    if go_rows:
        lines += [
            "",
            "## Sluice's queue-proxy against Knative's Go queue-proxy (same CC)",
            "",
            "| target | load | Sluice µs/req | Go µs/req | \u00d7 Go | \u00d7 nginx "
            "| best round \u00d7 Go |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        by_name = {r.name: r for r in ok}
        for r, key, pt in go_rows:
            go_pt = by_name[GO_PREFIX + r.name].points[key]
            load = "saturation" if key == SATURATION else "~1000 req/s"
            lines.append(
                f"| {r.name} | {load} | {_num(pt.cpu_us_per_req, '.1f')} | "
                f"{_num(go_pt.cpu_us_per_req, '.1f')} | {_num(pt.ratio_to_go, '.2f')} | "
                f"{_num(pt.ratio_to_nginx, '.2f')} | {_num(pt.best_ratio_to_go, '.2f')} |"
            )
    qp = [r for r in ok if "queue-proxy" in r.name]
    if qp:
        lines += [
            "",
            "## queue-proxy footprint",
            "",
            "| target | idle RSS MiB | start-up s |",
            "|---|---:|---:|",
        ]
        for r in qp:
            rss = None if r.idle_rss_kib is None else r.idle_rss_kib / 1024
            lines.append(f"| {r.name} | {_num(rss, '.1f')} | {_num(r.startup_s, '.2f')} |")
    noisy = [
        f"{r.name}/{key}"
        for r in ok
        for key, pt in r.points.items()
        if (f := median(run.foreign_cpu_s for run in pt.runs)) is not None
        and f > NOISE_SHARE * pt.runs[0].duration_s
    ]
    if noisy:
        lines += [
            "",
            f"Warning: other processes used over {NOISE_SHARE:.0%} of a core during: "
            + ", ".join(noisy)
            + " (see foreign_cpu_s in the JSON).",
        ]
    others = [r for r in results if r.status != "ok"]
    if others:
        lines += ["", "Not measured:", ""]
        lines += [f"- {r.name} ({r.status}): {r.note}" for r in others]
    return "\n".join(lines) + "\n"
