"""Where a cold start's time went: the phases of a request that waited for capacity.

Theory of operation. A request *waited for capacity* when, on arrival, its revision's
throttler had no pod to give it (no pod assigned, or others already waiting): a scale from
zero, or a burst beyond the pods there are. For such a request the handler keeps a
``Timing`` (arrival, then the moment the throttler gave it a pod, then the moment the pod's
response head arrived), and ``ColdStarts`` keeps, per revision, the *milestones* of its last
activation as whoever can see them reports them (``mark``):

* ``decided``: the scaler decided to scale up after the activator's poke (the embedded
  control plane; a Knative autoscaler does not tell);
* ``started``: a pod's processes (or container) were launched (embedded);
* ``ready``: the pod's first ready probe passed (embedded);
* ``endpoints``: the activator saw the revision's first ready endpoints (both modes).

``breakdown`` turns one request's stamps and the milestones into consecutive phases that
partition [arrival, first byte], so they add up to the time to first byte exactly:

==============  =============================================================================
``scale``       poke to scale decision
``pod-start``   decision to the pod's processes launched (embedded)
``ready-probe`` launch to the first ready probe passing (embedded)
``kube-startup`` what Sluice cannot see in Kubernetes: scheduling, image pull, container start
                and readiness, up to the endpoints turning ready (used only when neither
                ``started`` nor ``ready`` is known)
``held``        the rest of the wait in the activator: its own probe of the new pod, the queue
``first-byte``  the pod given the request to its response head
==============  =============================================================================

A milestone older than the request (from an earlier activation, or reached before it came)
gives its phase 0; a phase whose milestone is unknown is left out, so the set degrades
cleanly from the embedded mode (all six) to Kubernetes (``kube-startup``, ``held``,
``first-byte``). The phases are always recorded (per-revision histograms, the last
``RECENT`` breakdowns for ``sluice describe``); the ``Server-Timing`` response header carries
them only when the revision's annotation (``sluice.dev/server-timing: "true"``, see
``activator.affinity_config``) or the activator's ``--server-timing`` flag asks for it.

Only the event loop writes; all times are ``time.monotonic()``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from activator.model import Revision, RevisionKey

if TYPE_CHECKING:
    from activator.throttler import RevisionThrottler

__all__ = [
    "MILESTONES",
    "PHASES",
    "RECENT",
    "Breakdown",
    "ColdStarts",
    "Milestones",
    "Timing",
    "breakdown",
    "percentile",
    "server_timing",
    "waits_for_capacity",
]

MILESTONES = ("decided", "started", "ready", "endpoints")
PHASES = ("scale", "pod-start", "ready-probe", "kube-startup", "held", "first-byte")
#: Breakdowns kept per revision for ``sluice describe``.
RECENT = 20


@dataclass(slots=True)
class Milestones:
    """The last activation of one revision, as far as anyone told (None: not seen)."""

    decided: float | None = None
    started: float | None = None
    ready: float | None = None
    endpoints: float | None = None


@dataclass(frozen=True, slots=True)
class Breakdown:
    """One request's phases (name, seconds), in order; ``total`` is their sum."""

    at: float
    phases: tuple[tuple[str, float], ...]

    @property
    def total(self) -> float:
        return sum(d for _, d in self.phases)

    def to_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "totalMs": round(self.total * 1000, 3),
            "phases": {name: round(d * 1000, 3) for name, d in self.phases},
        }


def breakdown(
    arrival: float, marks: Milestones, dispatched: float, first_byte: float
) -> tuple[tuple[str, float], ...]:
    """The phases of a request that arrived at ``arrival``, was given a pod at ``dispatched``
    and saw the pod's response head at ``first_byte``: consecutive, never negative, adding
    up to ``first_byte - arrival`` (see the module docstring)."""
    bounds: tuple[tuple[str, float | None], ...]
    if marks.started is not None or marks.ready is not None:
        bounds = (
            ("scale", marks.decided),
            ("pod-start", marks.started),
            ("ready-probe", marks.ready),
        )
    else:
        bounds = (("scale", marks.decided), ("kube-startup", marks.endpoints))
    dispatched = max(arrival, dispatched)
    first_byte = max(dispatched, first_byte)
    cursor = arrival
    out: list[tuple[str, float]] = []
    for name, at in bounds:
        if at is None:
            continue
        at = min(at, dispatched)
        out.append((name, max(0.0, at - cursor)))
        cursor = max(cursor, at)
    out.append(("held", dispatched - cursor))
    out.append(("first-byte", first_byte - dispatched))
    return tuple(out)


def server_timing(phases: Iterable[tuple[str, float]]) -> bytes:
    """The ``Server-Timing`` value (RFC: ``name;dur=<ms>``, comma-separated)."""
    return ", ".join(f"{name};dur={d * 1000:.1f}" for name, d in phases).encode()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


class Timing:
    """The stamps of one request that waited for capacity (the handler's per-request state)."""

    __slots__ = ("arrival", "dispatched", "header", "revision")

    def __init__(self, revision: Revision, arrival: float, header: bool) -> None:
        self.revision = revision
        self.arrival = arrival
        self.dispatched = arrival
        #: Whether the response carries ``Server-Timing``.
        self.header = header


class ColdStarts:
    """Milestones per revision, and the breakdowns of the requests that waited."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep: int = RECENT) -> None:
        self.clock = clock
        self.keep = keep
        #: ``--server-timing``: the header on every revision's cold starts.
        self.header_everywhere = False
        self.marks: dict[RevisionKey, Milestones] = {}
        self.recent: dict[RevisionKey, deque[Breakdown]] = {}
        #: Called with each breakdown (the activator's histograms).
        self.observers: list[Callable[[Revision, Breakdown], None]] = []

    def mark(self, key: RevisionKey, milestone: str, at: float | None = None) -> None:
        """Report a milestone of ``key``'s activation (see the module docstring). A scale
        decision starts a new activation; the other milestones keep the first time they were
        reached after it."""
        if milestone not in MILESTONES:
            raise ValueError(f"milestone: unknown {milestone!r}, want one of {MILESTONES}")
        now = self.clock() if at is None else at
        marks = self.marks.get(key)
        if marks is None:
            marks = self.marks[key] = Milestones()
        if milestone == "decided":
            self.marks[key] = Milestones(decided=now)
            return
        before = getattr(marks, milestone)
        start = marks.decided
        if before is None or (start is not None and before < start):
            setattr(marks, milestone, now)

    def forget(self, key: RevisionKey) -> None:
        self.marks.pop(key, None)
        self.recent.pop(key, None)

    def forget_all_but(self, keep: Collection[RevisionKey]) -> None:
        """Drop what is kept of every revision not in ``keep`` (the ones that went away)."""
        for key in [k for k in self.recent if k not in keep]:
            del self.recent[key]
        for key in [k for k in self.marks if k not in keep]:
            del self.marks[key]

    def arrived(self, revision: Revision, no_capacity: bool) -> Timing | None:
        """A ``Timing`` for a request to ``revision`` when it waits for capacity, else None."""
        if not no_capacity:
            return None
        header = self.header_everywhere or revision.server_timing
        return Timing(revision, self.clock(), header)

    def first_byte(self, timing: Timing) -> bytes | None:
        """Record ``timing``'s breakdown now; the ``Server-Timing`` value if it is shown."""
        now = self.clock()
        key = timing.revision.key
        marks = self.marks.get(key) or Milestones()
        phases = breakdown(timing.arrival, marks, timing.dispatched, now)
        record = Breakdown(time.time(), phases)
        recent = self.recent.get(key)
        if recent is None:
            recent = self.recent[key] = deque(maxlen=self.keep)
        recent.append(record)
        for observe in self.observers:
            observe(timing.revision, record)
        return server_timing(phases) if timing.header else None

    def summary(self, key: RevisionKey, last: int = 5) -> dict[str, object]:
        """The last ``last`` breakdowns of ``key`` and p50/p95 per phase (milliseconds) over
        every kept one: what ``sluice describe`` and ``sluice top`` show."""
        recent = list(self.recent.get(key, ()))
        per_phase: dict[str, list[float]] = {}
        for b in recent:
            for name, d in b.phases:
                per_phase.setdefault(name, []).append(d * 1000)
        stats: Mapping[str, dict[str, float]] = {
            name: {
                "p50": round(percentile(values, 0.5), 3),
                "p95": round(percentile(values, 0.95), 3),
            }
            for name, values in sorted(per_phase.items(), key=lambda kv: PHASES.index(kv[0]))
        }
        totals = [b.total * 1000 for b in recent]
        return {
            "count": len(recent),
            "last": [b.to_dict() for b in recent[-last:]],
            "phases": dict(stats),
            "totalP50Ms": round(percentile(totals, 0.5), 3) if totals else None,
            "totalP95Ms": round(percentile(totals, 0.95), 3) if totals else None,
        }


def waits_for_capacity(throttler: RevisionThrottler | None) -> bool:
    """Whether a request arriving now would wait for a pod: none assigned, others already
    waiting, or (containerConcurrency > 0) every slot taken."""
    if throttler is None or throttler.waiting or not throttler.assigned:
        return True
    breaker = throttler.breaker
    return throttler.cc > 0 and breaker.in_flight >= breaker.capacity
