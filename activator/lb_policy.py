"""Pod trackers, the load-balancing policies over them, and the CC = 0 "infinite breaker".

Reference §2.4 and §2.5. A policy is a synchronous decision over the throttler's assigned
trackers, made while the caller holds a revision-level slot: it returns ``(release, tracker)``
with the tracker's slot already reserved, or ``(noop, None)`` when no tracker can take the
request (the caller then gives the revision slot back and queues again). ``release`` is
idempotent and must be called exactly when the request finishes.

Which policy, by container concurrency:

* CC = 0 → random choice of two, by fewest in-flight requests (no per-pod limit);
* CC 1 to 3 → first available in sorted order (keeps a few pods hot, the others free to idle);
* CC ≥ 4 → round robin over those with a free slot.

All state here is touched only from the event loop thread, between awaits, so no locks.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from proxy.dataplane.breaker import Breaker

__all__ = [
    "POD_QUEUE_DEPTH",
    "InfiniteBreaker",
    "Picker",
    "PodTracker",
    "RoundRobin",
    "first_available",
    "noop",
    "policy_for",
    "random_choice_2",
]

#: Admission depth of each pod tracker's breaker. Trackers are only used through the
#: non-blocking ``reserve``, so the depth never queues anything; Knative uses the same value.
POD_QUEUE_DEPTH = 10000

Release = Callable[[], None]
Pick = tuple[Release, "PodTracker | None"]
Picker = Callable[[Sequence["PodTracker"]], Pick]


def noop() -> None:
    """The release callback returned when nothing was picked."""


class PodTracker:
    """One healthy destination (a queue-proxy ``host:port``) as seen by this activator.

    For ``cc > 0`` it owns a ``Breaker(POD_QUEUE_DEPTH, cc, cc)`` used only through
    ``reserve``; ``update_capacity`` resizes it (the remnant rule of ``assign_slice``). For
    ``cc == 0`` there is no limit: capacity reads 1 and ``reserve`` always succeeds.
    ``weight`` counts requests in flight through ``random_choice_2``.
    """

    __slots__ = ("_breaker", "cc", "dest", "weight")

    def __init__(self, dest: str, cc: int) -> None:
        if cc < 0:
            raise ValueError(f"container concurrency must be >= 0, got {cc}")
        self.dest = dest
        self.cc = cc
        self.weight = 0
        self._breaker = Breaker(POD_QUEUE_DEPTH, cc, cc) if cc > 0 else None

    @property
    def capacity(self) -> int:
        return self._breaker.capacity if self._breaker is not None else 1

    @property
    def in_flight(self) -> int:
        """Requests holding a reservation on this tracker (0 when unlimited)."""
        return self._breaker.in_flight if self._breaker is not None else 0

    def update_capacity(self, n: int) -> None:
        """Set this tracker's concurrency limit; a no-op for an unlimited (CC = 0) tracker."""
        if self._breaker is not None:
            self._breaker.update_concurrency(n)

    def reserve(self) -> Release | None:
        """Take a slot without waiting; returns an idempotent release callback or None."""
        if self._breaker is None:
            return noop
        return self._breaker.reserve()

    def __repr__(self) -> str:
        return (
            f"PodTracker({self.dest!r}, capacity={self.capacity}, "
            f"in_flight={self.in_flight}, weight={self.weight})"
        )


class _WeightRelease:
    """Undo one ``weight`` increment, once (calling it again does nothing)."""

    __slots__ = ("tracker",)

    def __init__(self, tracker: PodTracker) -> None:
        self.tracker: PodTracker | None = tracker

    def __call__(self) -> None:
        tracker = self.tracker
        if tracker is not None:
            self.tracker = None
            tracker.weight -= 1


def _weighted(tracker: PodTracker) -> Pick:
    tracker.weight += 1
    return _WeightRelease(tracker), tracker


def random_choice_2(targets: Sequence[PodTracker], rng: random.Random) -> Pick:
    """Of two distinct random targets, the one with fewer requests in flight (coin flip on a
    tie). No capacity check: used only when pods have no concurrency limit."""
    n = len(targets)
    if n == 0:
        return noop, None
    if n == 1:
        return _weighted(targets[0])
    if n == 2:
        a, b = targets[0], targets[1]
    else:
        i = rng.randrange(n)
        j = rng.randrange(n - 1)
        if j >= i:
            j += 1  # two distinct indices from one draw each
        a, b = targets[i], targets[j]
    if b.weight < a.weight or (b.weight == a.weight and rng.random() < 0.5):
        a = b
    return _weighted(a)


def first_available(targets: Sequence[PodTracker]) -> Pick:
    """The first target, in the given (sorted) order, with a free slot."""
    for tracker in targets:
        release = tracker.reserve()
        if release is not None:
            return release, tracker
    return noop, None


class RoundRobin:
    """Round robin over the targets that have a free slot; one instance per revision.

    The next start index is the position after the last pick; it resets to 0 when the target
    list has shrunk below it. When every target is full the index is left unchanged.
    """

    __slots__ = ("index",)

    def __init__(self) -> None:
        self.index = 0

    def pick(self, targets: Sequence[PodTracker]) -> Pick:
        n = len(targets)
        if self.index >= n:
            self.index = 0
        for step in range(n):
            position = (self.index + step) % n
            tracker = targets[position]
            release = tracker.reserve()
            if release is not None:
                self.index = position + 1
                return release, tracker
        return noop, None

    def __repr__(self) -> str:
        return f"RoundRobin(index={self.index})"


def policy_for(cc: int, rng: random.Random | None = None) -> Picker:
    """A fresh picker for a revision with container concurrency ``cc``."""
    if cc <= 0:
        chooser = rng or random.Random()
        return lambda targets: random_choice_2(targets, chooser)
    if cc <= 3:
        return first_available
    return RoundRobin().pick


class InfiniteBreaker:
    """The revision breaker for CC = 0: an on/off gate with no limit when on.

    Capacity is 0 (closed: no pods) or 1 (open). ``acquire`` passes at once while open, without
    yielding, so it succeeds even if the caller's task is already being cancelled; while
    closed it waits until ``update_concurrency`` opens the gate, and every waiter present then
    passes even if the gate closes again before it resumes. A cancelled waiter holds nothing.
    ``release`` is a no-op and ``reserve`` always succeeds.
    """

    __slots__ = ("_is_open", "_open")

    def __init__(self) -> None:
        self._open = asyncio.Event()
        # Mirrors ``_open`` for the request path, which only needs a plain read.
        self._is_open = False

    @property
    def capacity(self) -> int:
        return 1 if self._is_open else 0

    @property
    def in_flight(self) -> int:
        """Always 0: an unlimited gate does not count requests."""
        return 0

    async def acquire(self) -> None:
        if self._is_open:
            return
        await self._open.wait()

    def release(self) -> None:
        """Nothing to give back."""

    def try_acquire(self) -> bool:
        """``acquire`` without waiting: True while the gate is open."""
        return self._is_open

    def reserve(self) -> Release:
        return noop

    def update_concurrency(self, n: int) -> None:
        """Open the gate iff ``n > 0``; opening wakes every waiter."""
        self._is_open = n > 0
        if n > 0:
            self._open.set()
        else:
            self._open.clear()

    def __repr__(self) -> str:
        return f"InfiniteBreaker(open={self._is_open})"
