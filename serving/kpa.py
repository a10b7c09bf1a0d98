"""Knative's KPA autoscaler as pure, synchronous objects with an injected clock.

Theory of operation. The caller (the embedded control plane) owns one ``Decider`` per revision.
Every second it ``record``s the revision's observed concurrency (pods' reported concurrency plus
whatever the activator holds); every decision tick (2 s in Knative) it calls ``decide``. The
decider averages its 1 s buckets over the stable window (60 s) and the panic window (6 s), turns
each average into a pod count against the per-revision target, bounds the counts by the max
scale-up/down rates, enters panic when the panic count is at least ``panic_threshold`` times the
ready pods, never scales down while panicking, applies the scale-down delay and finally the
min/max bounds. It reports 0 only after a whole stable window with no traffic; the caller then
keeps the last pod for the grace period with ``ScaleToZeroGate``. Nothing here does I/O; every
method takes ``now`` (seconds, any monotonic origin) so tests run on a fake clock.

The only mutable state is the decider's buckets, panic bookkeeping and delay window, and the
gate's timestamps; each object has a single owner. Configuration and per-revision specs are
frozen values from ``serving.autoscaling_config``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from serving.autoscaling_config import BUCKET_SECONDS, RevisionScalingSpec

__all__ = ["Decider", "Decision", "ScaleToZeroGate"]

# --- the decider -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """One scaling decision. ``excess_burst_capacity`` < 0 means keep the activator in the path."""

    desired_pods: int
    panic: bool
    stable_concurrency: float
    panic_concurrency: float
    excess_burst_capacity: int


class Decider:
    """Knative's KPA decision for one revision (see the module docstring).

    ``record`` adds to the 1 s bucket ``floor(now)``, so a caller may record each source
    (pods, activator) separately or the total once. Buckets the caller skipped count as zero.
    Creating the decider counts as activity: a new revision gets a whole stable window before
    it may be scaled to zero, as Knative's KPA holds a freshly active revision for that long.
    """

    def __init__(self, spec: RevisionScalingSpec, now: float) -> None:
        self.spec = spec
        self._buckets: dict[int, float] = {}
        self._first_bucket: int | None = None
        self._last_traffic = now
        self._panic_since: float | None = None
        self._max_panic_pods = 0
        self._delay: deque[tuple[float, int]] = deque()
        self._initialized = spec.initial_scale == 0
        self.last: Decision | None = None

    def __repr__(self) -> str:
        last = self.last.desired_pods if self.last else None
        return (
            f"<Decider target={self.spec.target_value:g} desired={last} "
            f"panic={self._panic_since is not None} buckets={len(self._buckets)}>"
        )

    def record(self, now: float, concurrency: float) -> None:
        """Add ``concurrency`` observed at ``now`` to its 1 s bucket."""
        bucket = math.floor(now / BUCKET_SECONDS)
        self._buckets[bucket] = self._buckets.get(bucket, 0.0) + concurrency
        if self._first_bucket is None:
            self._first_bucket = bucket
        if concurrency > 0:
            self._last_traffic = max(self._last_traffic, now)
        keep_from = bucket - self._window_buckets(self.spec.stable_window)
        for old in [b for b in self._buckets if b < keep_from]:
            del self._buckets[old]

    def average(self, now: float, window: float) -> float:
        """Mean over the buckets of ``window`` ending at ``now``; before the window has filled,
        over the buckets since the first record (Knative's ``WindowAverage``)."""
        if self._first_bucket is None:
            return 0.0
        current = math.floor(now / BUCKET_SECONDS)
        size = self._window_buckets(window)
        total = sum(v for b, v in self._buckets.items() if current - size < b <= current)
        if total <= 0:
            return 0.0
        return total / max(1, min(size, current - self._first_bucket + 1))

    def decide(self, now: float, ready_pods: int, *, reachable: bool = True) -> Decision:
        """Compute the desired pod count at ``now`` for ``ready_pods`` ready pods.

        ``reachable`` is false when no route sends traffic to the revision: it may then be
        scaled down without the down-rate limit and without its min-scale floor.
        """
        spec = self.spec
        stable = self.average(now, spec.stable_window)
        panic_value = self.average(now, spec.panic_window)
        ready = max(1, ready_pods)
        max_up = math.ceil(spec.max_scale_up_rate * ready)
        max_down = math.floor(ready / spec.max_scale_down_rate) if reachable else 0
        stable_want = math.ceil(stable / spec.target_value)
        panic_want = math.ceil(panic_value / spec.target_value)
        stable_pods = min(max(stable_want, max_down), max_up)
        panic_pods = min(max(panic_want, max_down), max_up)
        if spec.activation_scale > 1:
            if stable_want > 0:
                stable_pods = max(stable_pods, spec.activation_scale)
            if panic_want > 0:
                panic_pods = max(panic_pods, spec.activation_scale)

        if panic_want / ready >= spec.panic_threshold:
            self._panic_since = now  # entering or extending panic
        elif self._panic_since is not None and self._panic_since + spec.stable_window < now:
            self._panic_since = None  # the surge is now part of the stable average
            self._max_panic_pods = 0

        desired = stable_pods
        panicking = self._panic_since is not None
        if panicking:
            desired = max(desired, panic_pods)
            if desired > self._max_panic_pods:
                self._max_panic_pods = desired
            desired = self._max_panic_pods  # panic never scales down

        if spec.scale_down_delay > 0:
            self._delay.append((now, desired))
            while self._delay[0][0] <= now - spec.scale_down_delay:
                self._delay.popleft()
            desired = max(value for _, value in self._delay)

        desired = self._bound(now, desired, ready_pods, reachable)
        decision = Decision(
            desired_pods=desired,
            panic=panicking,
            stable_concurrency=stable,
            panic_concurrency=panic_value,
            excess_burst_capacity=self._excess_burst_capacity(ready_pods, panic_value),
        )
        self.last = decision
        return decision

    def poke(self, now: float, ready_pods: int = 0) -> Decision | None:
        """Decide at once when the last decision was zero and traffic has arrived since.

        Returns ``None`` when there is nothing to do. Otherwise the decision wants at least one
        pod (and at least activation-scale, min-scale and, before it was first reached,
        initial-scale), capped by max-scale.
        """
        if self.last is not None and self.last.desired_pods > 0:
            return None
        if self.average(now, self.spec.panic_window) <= 0:
            return None
        decision = self.decide(now, ready_pods)
        floor = max(1, self.spec.activation_scale, self.spec.min_scale)
        if self.spec.max_scale:
            floor = min(floor, self.spec.max_scale)
        if decision.desired_pods < floor:
            decision = replace(decision, desired_pods=floor)
            self.last = decision
        return decision

    def _bound(self, now: float, desired: int, ready_pods: int, reachable: bool) -> int:
        spec = self.spec
        if desired == 0:
            idle_for_window = now - self._last_traffic >= spec.stable_window
            if not spec.enable_scale_to_zero:
                desired = 1
            elif not idle_for_window:
                desired = min(1, ready_pods)
        if not self._initialized:
            if ready_pods >= spec.initial_scale:
                self._initialized = True
            else:
                desired = max(desired, spec.initial_scale)
        if reachable:
            desired = max(desired, spec.min_scale)
        if spec.max_scale:
            desired = min(desired, spec.max_scale)
        return desired

    def _excess_burst_capacity(self, ready_pods: int, panic_value: float) -> int:
        tbc = self.spec.target_burst_capacity
        if tbc == 0:
            return 0
        if tbc < 0:
            return -1
        return math.floor(ready_pods * self.spec.total_value - tbc - panic_value)

    @staticmethod
    def _window_buckets(window: float) -> int:
        return max(1, round(window / BUCKET_SECONDS))


class ScaleToZeroGate:
    """Keeps the last pod for the grace period after the decider first wants zero.

    Knative removes the last pod only once ``max(scale-to-zero-grace-period, retention)`` has
    passed since the revision went inactive, so the activator is in the path before the pod
    goes. ``apply`` turns the decider's wish into the pod count to run now; ``remove_at`` says
    when the last pod may go (``None`` when no removal is pending).
    """

    def __init__(self, grace_period: float) -> None:
        self.grace_period = grace_period
        self._zero_since: float | None = None

    def __repr__(self) -> str:
        return f"<ScaleToZeroGate grace={self.grace_period:g} remove_at={self.remove_at}>"

    @property
    def remove_at(self) -> float | None:
        return None if self._zero_since is None else self._zero_since + self.grace_period

    def apply(self, now: float, desired: int, current_pods: int) -> int:
        """The pod count to run: ``desired`` except that a wish for 0 keeps 1 pod until the
        grace period has passed."""
        if desired > 0 or current_pods == 0:
            self._zero_since = None
            return desired
        if self._zero_since is None:
            self._zero_since = now
        return 0 if now >= self._zero_since + self.grace_period else 1
