"""The per-revision throttler: hold requests until a pod can take them (reference §2.4).

Theory of operation
-------------------
One ``RevisionThrottler`` per revision has two levels of admission:

* a revision-wide breaker. For CC > 0 it is a ``Breaker(queue_depth, 2**31-1, 0)`` whose
  capacity is ``calculate_capacity(cc, pods, activators)``: this process's share of the
  revision's concurrency; it hands slots out in arrival order. For CC = 0 it is an
  ``InfiniteBreaker``, a gate that is open while any pod is healthy. Either way the requests
  waiting (``waiting``, the activator's buffer) are bounded by ``queue_depth``: one more is
  answered 503 ``pending request queue full`` at once. (The breaker's own admission bound,
  ``queue_depth + 2**31-1`` as in Knative, is never the one that bites.)
* a ``PodTracker`` per healthy destination, reserved without waiting through the LB policy
  (``policy_for(cc)``) over the trackers assigned to this process (``assign_slice``).

``try_`` waits for a revision slot, asks the policy for a tracker, and runs the request while
holding both; both are released in ``finally``. If the policy finds no tracker (capacity ran
ahead of the trackers, or a pod left), the slot is given back and the request waits for the
next release or update before queueing again, so it never spins.

State is mutated by one writer only: ``apply`` (new healthy destinations) and ``retire`` are
called by the activator's single update task; requests only reserve and release. Trackers are
kept by destination across updates, so the in-flight count of a pod survives an update, and a
removed pod gets no new requests while those in flight finish on the tracker they hold.

A revision whose container concurrency or queue depth changes gets a new throttler; the old
one is *retired*: its gate is opened so its waiters wake, see ``retired`` and move to the new
throttler (keeping no place in the old queue).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from activator.capacity import MAX_CAPACITY, assign_slice, calculate_capacity
from activator.lb_policy import InfiniteBreaker, Picker, PodTracker, policy_for
from activator.model import Revision
from proxy.dataplane.breaker import Breaker
from proxy.errors import QueueFull

__all__ = ["Admission", "Retired", "RevisionThrottler"]

T = TypeVar("T")


class Admission(Protocol):
    """What the request path may do with a revision's throttler: the request side only."""

    async def try_(self, fn: Callable[[str], Awaitable[T]]) -> T:
        """Run ``fn(dest)`` once a revision slot and a pod slot are held (waiting for them)."""
        ...

    def try_now(self) -> tuple[Callable[[], None], PodTracker] | None:
        """Both slots at once, without waiting, or None; give them back with ``done``."""
        ...

    def done(self, release: Callable[[], None]) -> None:
        """Give back what ``try_now`` took."""
        ...


class Retired(Exception):
    """The throttler was replaced while the request waited; retry on the current one."""


class RevisionThrottler:
    """Admission for one revision in one activator process. See the module docstring."""

    __slots__ = (
        "_picker",
        "_rng",
        "_wake",
        "activator_index",
        "activators",
        "assigned",
        "breaker",
        "cc",
        "cluster_ip",
        "pods",
        "queue_depth",
        "retired",
        "revision",
        "trackers",
        "waiting",
    )

    def __init__(
        self,
        revision: Revision,
        queue_depth: int,
        activators: int = 1,
        activator_index: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.revision = revision
        self.cc = revision.container_concurrency
        self.queue_depth = queue_depth
        self.activators = activators
        self.activator_index = activator_index
        self._rng = rng or random.Random()
        self.breaker: Breaker | InfiniteBreaker = (
            Breaker(queue_depth, MAX_CAPACITY, 0) if self.cc > 0 else InfiniteBreaker()
        )
        self._picker: Picker = policy_for(self.cc, self._rng)
        self.trackers: dict[str, PodTracker] = {}
        self.assigned: list[PodTracker] = []
        #: The destinations last applied, and the ClusterIP if requests go there instead.
        self.pods: frozenset[str] = frozenset()
        self.cluster_ip: str | None = None
        #: Requests waiting for a revision slot or a tracker (the activator's buffer).
        self.waiting = 0
        self.retired = False
        self._wake: asyncio.Future[None] | None = None

    @property
    def capacity(self) -> int:
        return self.breaker.capacity

    # ------------------------------------------------------------------ writer side

    def apply(self, dests: Iterable[str], cluster_ip: str | None = None) -> None:
        """Make ``dests`` (healthy ``host:port``) the pods of this revision.

        With ``cluster_ip``, every request goes to that one destination with no per-pod
        limit (kube-proxy balances behind it) and ``dests``, the pods Kubernetes calls ready,
        only size the capacity. Trackers first, then capacity, so capacity never runs ahead
        of the trackers.
        """
        wanted = set(dests)
        self.pods = frozenset(wanted)
        self.cluster_ip = cluster_ip
        pods = len(wanted)
        if cluster_ip is not None:
            wanted = {cluster_ip}
        trackers = self.trackers
        for dest in [d for d in trackers if d not in wanted]:
            del trackers[dest]
        for dest in wanted:
            if dest not in trackers:
                trackers[dest] = PodTracker(dest, 0 if cluster_ip is not None else self.cc)
        if cluster_ip is not None:
            self.assigned = list(trackers.values())
        else:
            self.assigned = assign_slice(
                list(trackers.values()), self.activator_index, self.activators, self.cc, self._rng
            )
        self.breaker.update_concurrency(calculate_capacity(self.cc, pods, self.activators))
        self._notify()

    def set_activators(self, activators: int, index: int) -> None:
        """Change this process's place among the activators and recompute the split."""
        if (activators, index) == (self.activators, self.activator_index):
            return
        self.activators = activators
        self.activator_index = index
        self.apply(self.pods, self.cluster_ip)

    def retire(self) -> None:
        """Stop admitting: every waiter wakes and gets ``Retired``; in-flight ones finish."""
        self.retired = True
        self.trackers.clear()
        self.assigned = []
        self.breaker.update_concurrency(MAX_CAPACITY if isinstance(self.breaker, Breaker) else 1)
        self._notify()

    def _notify(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    # ----------------------------------------------------------------- request side

    async def try_(self, fn: Callable[[str], Awaitable[T]]) -> T:
        """Run ``fn(dest)`` once a revision slot and a pod slot are held.

        Raises ``QueueFull`` at once when the revision queue is full, ``Retired`` if the
        throttler was replaced while waiting, and whatever ``fn`` raises. Cancellation while
        waiting frees the place in the queue at once.
        """
        breaker = self.breaker
        if self.waiting >= self.queue_depth:
            # The revision breaker admits 2**31-1 + depth (Knative's), so the buffer bound
            # is kept here: requests waiting for a pod, for every CC.
            raise QueueFull()
        self.waiting += 1
        waiting = True
        try:
            while True:
                await breaker.acquire()
                try:
                    if self.retired:
                        raise Retired()
                    release, tracker = self._picker(self.assigned)
                    if tracker is not None:
                        self.waiting -= 1
                        waiting = False
                        try:
                            return await fn(tracker.dest)
                        finally:
                            release()
                            self._notify()
                finally:
                    breaker.release()
                # No pod could take it: wait for a release or an update, then queue again.
                if self._wake is None:
                    self._wake = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._wake)
        finally:
            if waiting:
                self.waiting -= 1

    def try_now(self) -> tuple[Callable[[], None], PodTracker] | None:
        """Both slots at once, without waiting, or None (nothing held).

        Only when nobody is queued, so a request on this path never overtakes a waiter.
        The caller runs the request on the tracker and then calls ``done(release)``.
        """
        if self.waiting or self.retired:
            return None
        breaker = self.breaker
        if not breaker.try_acquire():
            return None
        release, tracker = self._picker(self.assigned)
        if tracker is None:
            breaker.release()
            return None
        return release, tracker

    def done(self, release: Callable[[], None]) -> None:
        """Give back what ``try_now`` took."""
        release()
        self.breaker.release()
        self._notify()

    def __repr__(self) -> str:
        return (
            f"RevisionThrottler({self.revision.namespace}/{self.revision.name}, cc={self.cc}, "
            f"capacity={self.capacity}, pods={len(self.trackers)}, "
            f"assigned={len(self.assigned)}, waiting={self.waiting}"
            f"{', retired' if self.retired else ''})"
        )
