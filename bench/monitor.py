"""Background watchers of a running scenario: pod counts over time, and the progress line.

``PodSampler`` asks the API for every revision's desired/actual/ready pods every
``interval`` seconds (the figures ``sluice get revisions -o json`` prints) and keeps the
samples; ``Progress`` rewrites one line on stderr each second until stopped. Both are daemon
threads with a stop event, so a scenario that fails cannot leave them running.
"""

from __future__ import annotations

import csv
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bench.stack import Sluice

SAMPLE_INTERVAL_S = 0.5
SAMPLE_FIELDS = ("t", "revision", "desired", "actual", "ready", "traffic", "rps", "concurrency")


class PodSampler:
    def __init__(self, sluice: Sluice, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.sluice = sluice
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-sampler", daemon=True)

    def start(self) -> PodSampler:
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest sample of each revision."""
        out: dict[str, dict[str, Any]] = {}
        for s in self.samples[-50:]:
            out[s["revision"]] = s
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = self.sluice.revisions()
            except (OSError, ValueError, KeyError):
                items = []
            now = time.time()
            for rev in items:
                self.samples.append(
                    {
                        "t": now,
                        "revision": rev["name"],
                        "desired": int(rev["desired"]),
                        "actual": int(rev["actual"]),
                        "ready": int(rev.get("readyPods", 0)),
                        "traffic": int(rev.get("traffic", 0)),
                        "rps": float(rev.get("rps", 0.0)),
                        "concurrency": float(rev.get("concurrency", 0.0)),
                        "pods": [p["name"] for p in rev.get("pods", []) if p.get("phase")],
                    }
                )
            self._stop.wait(self.interval)


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SAMPLE_FIELDS)
        w.writerows([s[k] for k in SAMPLE_FIELDS] for s in samples)


def pods_line(sampler: PodSampler | None) -> str:
    if sampler is None:
        return ""
    parts = [
        f"{name} {s['ready']}/{s['actual']}/{s['desired']}"
        for name, s in sorted(sampler.latest().items())
        if s["actual"] or s["desired"] or s["traffic"]
    ]
    return "pods " + ", ".join(parts) if parts else ""


class RecordCounter:
    """Counts rows appended to ``requests-*.csv`` files under a directory, incrementally."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self.rows = 0
        self.failures = 0

    def update(self) -> tuple[int, int]:
        for path in self.directory.glob("requests-*.csv"):
            start = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1  # only whole lines
            for line in chunk[:end].splitlines():
                fields = line.split(b",")
                if len(fields) < 3 or fields[0] == b"t":
                    continue
                self.rows += 1
                status = int(fields[2] or b"0") if fields[2].isdigit() else 0
                if not 200 <= status < 400:
                    self.failures += 1
            self._offsets[path] = start + end
        return self.rows, self.failures


class Progress:
    """One line on stderr, rewritten every second: ``[bench] NAME phase 12/30 s  status``."""

    def __init__(self, name: str, out: TextIO = sys.stderr) -> None:
        self.name = name
        self.out = out
        self.phase = "starting"
        self.total_s = 0.0
        self.phase_started = time.monotonic()
        self.status: Callable[[], str] = lambda: ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._tty = out.isatty()

    def start(self) -> Progress:
        self._thread.start()
        return self

    def set(
        self, phase: str, total_s: float = 0.0, status: Callable[[], str] | None = None
    ) -> None:
        self.phase, self.total_s, self.phase_started = phase, total_s, time.monotonic()
        self.status = status or (lambda: "")
        if not self._tty:
            self._emit(end="\n")

    def note(self, message: str) -> None:
        """A line of its own (kept in the scroll-back)."""
        prefix = "\r\x1b[K" if self._tty else ""
        print(f"{prefix}[bench] {self.name}: {message}", file=self.out, flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._tty:
            print("\r\x1b[K", end="", file=self.out, flush=True)

    def _line(self) -> str:
        elapsed = time.monotonic() - self.phase_started
        clock = f"{elapsed:.0f}/{self.total_s:.0f} s" if self.total_s else f"{elapsed:.0f} s"
        try:
            status = self.status()
        except Exception as exc:  # a status callback must never kill the progress line
            status = f"({type(exc).__name__})"
        return f"[bench] {self.name}: {self.phase} {clock}  {status}".rstrip()

    def _emit(self, end: str) -> None:
        prefix = "\r\x1b[K" if self._tty else ""
        print(prefix + self._line(), end=end, file=self.out, flush=True)

    def _run(self) -> None:
        # Not a terminal (a log file, CI): one line every 5 s instead of a redrawn one.
        every = 1.0 if self._tty else 5.0
        while not self._stop.wait(every):
            self._emit(end="" if self._tty else "\n")
