"""PNG plots of a scenario (matplotlib, Agg backend): small, one figure per file.

Each function takes already-summarised data (``bench.summary``) and a path, and returns the
path it wrote. Figures are 6.4 x 3.2 in at 80 dpi (about 30-60 kB), small enough to commit.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bench.summary import Bucket

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIZE = (6.4, 3.2)
DPI = 80


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend, imported on first use (it is a bench extra,
    so modules that import this one still load without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure() -> tuple[Figure, Axes]:
    fig, ax = _pyplot().subplots(figsize=SIZE, dpi=DPI)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path, title: str, note: str = "") -> Path:
    fig.suptitle(title, fontsize=10)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, alpha=0.7)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _mark(ax: Axes, marks: Mapping[str, float]) -> None:
    for label, t in marks.items():
        ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(label, (t, 1), xycoords=("data", "axes fraction"), fontsize=7,
                    rotation=90, va="top", ha="right")  # fmt: skip


def latency_over_time(
    series: Mapping[str, Sequence[Bucket]],
    path: Path,
    title: str,
    marks: Mapping[str, float] | None = None,
    log: bool = False,
) -> Path:
    """p50 (solid), p95 (dashed) and p99 (dotted) per time bucket, one colour per label."""
    fig, ax = _figure()
    for i, (label, buckets) in enumerate(series.items()):
        colour = f"C{i}"
        t = [b.t for b in buckets]
        for key, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ys = [getattr(b, key) for b in buckets]
            ys = [float("nan") if y is None else y for y in ys]
            ax.plot(t, ys, style, color=colour, linewidth=1.2,
                    label=f"{label} {key}" if len(series) > 1 or key else key)  # fmt: skip
    _mark(ax, marks or {})
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency (ms)")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=3 if len(series) > 1 else 1)
    return _save(fig, path, title)


def shares_over_time(
    buckets: Sequence[Bucket],
    path: Path,
    title: str,
    expected: Sequence[tuple[float, float, Mapping[str, float]]] = (),
    marks: Mapping[str, float] | None = None,
) -> Path:
    """Each revision's share of the answers per bucket; ``expected`` as flat dashed lines."""
    fig, ax = _figure()
    revisions = sorted({rev for b in buckets for rev in b.shares})
    colours = {rev: f"C{i}" for i, rev in enumerate(revisions)}
    t = [b.t for b in buckets]
    for rev in revisions:
        ax.plot(t, [b.shares.get(rev, 0.0) * 100 for b in buckets], "-", marker=".",
                markersize=3, color=colours[rev], label=rev)  # fmt: skip
    for start, end, want in expected:
        for rev, share in want.items():
            ax.hlines(share * 100, start, end, colors=colours.get(rev, "k"), linestyles="--",
                      linewidth=0.8)  # fmt: skip
    _mark(ax, marks or {})
    ax.set_ylim(-2, 102)
    ax.set_xlabel("seconds")
    ax.set_ylabel("share of answers (%)")
    ax.legend(fontsize=7)
    return _save(fig, path, title, "dashed: the route's percentages" if expected else "")


def pods_over_time(
    samples: Sequence[Mapping[str, Any]],
    t0: float,
    path: Path,
    title: str,
    marks: Mapping[str, float] | None = None,
) -> Path:
    """Desired (dashed) and actual (solid) pods per revision, from the API's samples."""
    fig, ax = _figure()
    by_rev: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for s in samples:
        by_rev[s["revision"]].append(s)
    top = 1
    for i, (rev, rows) in enumerate(sorted(by_rev.items())):
        t = [r["t"] - t0 for r in rows]
        ax.step(t, [r["desired"] for r in rows], "--", where="post", color=f"C{i}",
                linewidth=1, label=f"{rev} desired")  # fmt: skip
        ax.step(t, [r["actual"] for r in rows], "-", where="post", color=f"C{i}",
                linewidth=1.5, label=f"{rev} actual")  # fmt: skip
        top = max(top, *(r["desired"] for r in rows), *(r["actual"] for r in rows))
    _mark(ax, marks or {})
    ax.set_ylim(-0.2, top + 0.8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("pods")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path, title)


def distribution(values_ms: Sequence[float], path: Path, title: str, xlabel: str) -> Path:
    """A histogram of ``values_ms`` with every value also drawn as a tick (few samples)."""
    fig, ax = _figure()
    if values_ms:
        ax.hist(values_ms, bins=min(20, max(5, len(values_ms))), color="C0", alpha=0.7)
        ax.plot(values_ms, [0] * len(values_ms), "|", color="k", markersize=12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _save(fig, path, title, f"n = {len(values_ms)}")


def bars(
    groups: Mapping[str, Mapping[str, float | None]], path: Path, title: str, ylabel: str
) -> Path:
    """Grouped bars: one group per outer key, one bar per inner key (e.g. hop x percentile)."""
    fig, ax = _figure()
    names = list(groups)
    keys = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        xs = [i + j * width for i in range(len(names))]
        ys = [groups[n].get(key) or 0.0 for n in names]
        ax.bar(xs, ys, width=width, label=key, color=f"C{j}")
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(names))], names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _save(fig, path, title)
