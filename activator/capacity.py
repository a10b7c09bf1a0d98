"""Capacity maths of the revision throttler (Knative v1.10.2 semantics, reference §2.4).

Pure functions, no I/O, no event loop. Several activators (or Sluice worker processes) may
front one revision; each one admits only its share of the revision's concurrency, and in pod
mode each one balances over its own slice of the pods so that the per-pod limits of different
activators do not overlap more than they must.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = [
    "MAX_CAPACITY",
    "CapacityTracker",
    "assign_slice",
    "calculate_capacity",
    "infer_index",
    "pick_indices",
]

#: Capacity meaning "unlimited"; Knative's ``MaxBreakerCapacity``. For CC = 0 the infinite
#: breaker reads any positive capacity as "open".
MAX_CAPACITY = 2**31 - 1


class CapacityTracker(Protocol):
    """What ``assign_slice`` needs of a pod tracker."""

    @property
    def dest(self) -> str: ...

    def update_capacity(self, n: int) -> None: ...


T = TypeVar("T", bound=CapacityTracker)


def calculate_capacity(cc: int, backends: int, activators: int) -> int:
    """Revision-wide capacity of this activator.

    ``backends`` is the number of pod trackers (all of them, not only the assigned slice) or,
    in ClusterIP mode, the ready backend count. No backends → 0. ``cc == 0`` → ``MAX_CAPACITY``
    (open). Otherwise ``cc * backends``, returned as ``MAX_CAPACITY`` if it exceeds it, else
    divided by ``max(1, activators)`` with integer division and raised to at least 1.
    """
    if backends <= 0:
        return 0
    if cc <= 0:
        return MAX_CAPACITY
    total = cc * backends
    if total > MAX_CAPACITY:
        return MAX_CAPACITY
    return max(1, total // max(1, activators))


def infer_index(ips: Sequence[str], own_ip: str) -> int:
    """Position of ``own_ip`` among the distinct ``ips`` sorted as strings; -1 if absent.

    String order (not numeric) on purpose: every activator must compute the same order from
    the same Endpoints, and Knative's activators sort this way.
    """
    ordered = sorted(set(ips))
    try:
        return ordered.index(own_ip)
    except ValueError:
        return -1


def pick_indices(num_trackers: int, index: int, num_activators: int) -> tuple[int, int, int]:
    """This activator's slice ``[begin, end)`` of the sorted trackers, and the remnant count.

    With more activators than trackers, each activator takes the single tracker
    ``index % num_trackers`` and there are no remnants. Otherwise each takes
    ``num_trackers // num_activators`` consecutive trackers and the last
    ``num_trackers % num_activators`` trackers (the remnants) are shared by all.
    No trackers → ``(0, 0, 0)``.
    """
    if num_trackers <= 0:
        return (0, 0, 0)
    num_activators = max(1, num_activators)
    if num_activators > num_trackers:
        begin = index % num_trackers
        return (begin, begin + 1, 0)
    per_activator = num_trackers // num_activators
    begin = index * per_activator
    return (begin, begin + per_activator, num_trackers % num_activators)


def assign_slice(
    trackers: Sequence[T],
    index: int,
    num_activators: int,
    cc: int,
    rng: random.Random | None = None,
) -> list[T]:
    """The trackers this activator balances over, sorted by ``dest`` (remnants last).

    First resets every tracker's capacity to ``cc``. Everything is assigned when the index is
    unknown (-1), there are at most one tracker or one activator, or ``cc == 0`` (no per-pod
    limits to share). Otherwise this activator gets its ``pick_indices`` slice plus every
    remnant tracker, the remnants shuffled with ``rng`` and their capacity set to
    ``ceil(cc / num_activators)`` because all activators send to them.
    """
    ordered = sorted(trackers, key=lambda t: t.dest)
    for tracker in ordered:
        tracker.update_capacity(cc)
    if index < 0 or len(ordered) <= 1 or num_activators <= 1 or cc <= 0:
        return ordered
    begin, end, remnants = pick_indices(len(ordered), index, num_activators)
    assigned = ordered[begin:end]
    if remnants:
        tail = ordered[-remnants:]
        # Shuffled so that first-available and round-robin in different activators do not
        # all start on the same shared pod.
        (rng or random.Random()).shuffle(tail)
        shared = math.ceil(cc / num_activators)
        for tracker in tail:
            tracker.update_capacity(shared)
        assigned += tail
    return assigned
