"""One row per request, whoever sent it: locust's event hook, hey's CSV, or our own client.

A ``Record`` is the unit every summary and plot works on. Files are plain CSV with the
columns of ``FIELDS`` so a reader can open them in anything; locust writes one file per
process (``requests-<pid>.csv``) and ``read_records`` merges them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

FIELDS = ("t", "latency_ms", "status", "revision", "pod", "error", "name")
#: The status recorded for a request that got no HTTP answer (connection error, timeout).
NO_ANSWER = 0


@dataclass(frozen=True, slots=True)
class Record:
    """One request: start time (epoch s), latency (ms), status and who served it."""

    t: float
    latency_ms: float
    status: int
    revision: str = ""
    pod: str = ""
    error: str = ""
    name: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400 and not self.error

    def row(self) -> list[str]:
        return [str(v) for v in astuple(self)]


def parse_row(row: Sequence[str]) -> Record:
    t, latency, status, revision, pod, error, name = (list(row) + [""] * 7)[:7]
    return Record(float(t), float(latency), int(status or NO_ANSWER), revision, pod, error, name)


def read_records(paths: Iterable[Path]) -> list[Record]:
    """Every record of every file (headers skipped), sorted by start time."""
    out: list[Record] = []
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if row and row[0] != FIELDS[0]:
                    out.append(parse_row(row))
    out.sort(key=lambda r: r.t)
    return out


def write_records(path: Path, records: Iterable[Record]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        w.writerows(r.row() for r in records)


def parse_hey_csv(text: str, started_at: float, name: str = "") -> list[Record]:
    """``hey -o csv`` output → records; ``offset`` is seconds since ``started_at``.

    hey writes one row per completed request (errors included, with status code 0).
    """
    rows = csv.DictReader(io.StringIO(text))
    out = [
        Record(
            t=started_at + float(row["offset"]),
            latency_ms=float(row["response-time"]) * 1e3,
            status=int(row["status-code"] or NO_ANSWER),
            error="" if int(row["status-code"] or 0) else "no answer",
            name=name,
        )
        for row in rows
        if row.get("offset")
    ]
    out.sort(key=lambda r: r.t)
    return out
