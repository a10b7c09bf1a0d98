"""The revision throttler against fake request functions (reference §5.9)."""

from __future__ import annotations

import asyncio
import random

import pytest

from activator.capacity import MAX_CAPACITY
from activator.lb_policy import InfiniteBreaker
from activator.model import Revision
from activator.throttler import Retired, RevisionThrottler
from proxy.errors import QueueFull

pytestmark = pytest.mark.timeout(10)


def rev(cc: int) -> Revision:
    return Revision(name="r", namespace="ns", container_concurrency=cc)


def pods(n: int) -> list[str]:
    return [f"10.0.0.{i}:8012" for i in range(n)]


class Gate:
    """A request function that records its dest and holds until released."""

    def __init__(self) -> None:
        self.dests: list[str] = []
        self.running = 0
        self.max_running = 0
        self.release = asyncio.Event()

    async def __call__(self, dest: str) -> str:
        self.dests.append(dest)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.release.wait()
            return dest
        finally:
            self.running -= 1


async def instant(dest: str) -> str:
    return dest


@pytest.mark.parametrize(
    ("cc", "npods", "activators", "want"),
    [
        (10, 0, 1, 0),
        (10, 1, 1, 10),
        (10, 2, 1, 20),
        (10, 2, 2, 10),
        (10, 3, 2, 15),
        (10, 10, 200, 1),
        (42, 6, 4, 63),
        (0, 0, 1, 0),
        (0, 3, 1, 1),  # the infinite breaker reads "open" as 1
        (1000, 3_000_000, 1, MAX_CAPACITY),
    ],
)
def test_throttler_capacity_follows_pods_and_activators(
    cc: int, npods: int, activators: int, want: int
) -> None:
    t = RevisionThrottler(rev(cc), 100, activators=activators, activator_index=0)
    if npods > 1000:
        # Too many trackers to build; the clamp is the capacity maths' job.
        from activator.capacity import calculate_capacity

        assert calculate_capacity(cc, npods, activators) == want
        return
    t.apply(pods(npods))
    assert t.capacity == want


def test_cc0_uses_infinite_breaker_and_assigns_every_pod() -> None:
    t = RevisionThrottler(rev(0), 100, activators=4, activator_index=1)
    assert isinstance(t.breaker, InfiniteBreaker)
    t.apply(pods(3))
    assert t.capacity == 1 and len(t.assigned) == 3
    t.apply([])
    assert t.capacity == 0 and t.assigned == []


def test_pod_assignment_finite_matches_knative_example() -> None:
    t = RevisionThrottler(rev(42), 100, activators=4, activator_index=0, rng=random.Random(1))
    t.apply(pods(6))
    assigned = {tr.dest: tr.capacity for tr in t.assigned}
    assert assigned == {"10.0.0.0:8012": 42, "10.0.0.4:8012": 11, "10.0.0.5:8012": 11}
    assert t.capacity == 63
    t.apply([])
    assert t.capacity == 0 and t.assigned == []


async def test_second_request_waits_with_cc1_and_one_pod() -> None:
    t = RevisionThrottler(rev(1), 100)
    t.apply(pods(1))
    gate = Gate()
    first = asyncio.ensure_future(t.try_(gate))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(t.try_(instant), 0.05)
    gate.release.set()
    assert await first == "10.0.0.0:8012"
    assert t.waiting == 0


async def test_two_activators_three_pods_cc1_admit_one_request() -> None:
    t = RevisionThrottler(rev(1), 100, activators=2, activator_index=1)
    t.apply(pods(3))
    assert t.capacity == 1
    gate = Gate()
    first = asyncio.ensure_future(t.try_(gate))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(t.try_(instant), 0.05)
    gate.release.set()
    await first


async def test_cc1_spreads_over_pods_and_never_doubles_up() -> None:
    t = RevisionThrottler(rev(1), 100)
    t.apply(pods(3))
    gate = Gate()
    tasks = [asyncio.ensure_future(t.try_(gate)) for _ in range(6)]
    await asyncio.sleep(0.01)
    assert sorted(gate.dests) == pods(3)
    assert t.waiting == 3
    gate.release.set()
    assert len(await asyncio.gather(*tasks)) == 6
    assert gate.max_running == 3


async def test_cc3_first_available_clumps_on_first_pod() -> None:
    t = RevisionThrottler(rev(3), 100)
    t.apply(pods(3))
    for _ in range(5):
        assert await t.try_(instant) == "10.0.0.0:8012"


async def test_cc5_round_robin_uses_every_pod() -> None:
    t = RevisionThrottler(rev(5), 100)
    t.apply(pods(3))
    seen = [await t.try_(instant) for _ in range(6)]
    assert seen == pods(3) * 2


async def test_queue_full_fails_fast() -> None:
    t = RevisionThrottler(rev(1), 2)
    gate = Gate()
    # No pods: capacity 0, so everything queues; depth 2 → the third is refused at once.
    waiters = [asyncio.ensure_future(t.try_(gate)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await t.try_(gate)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert t.waiting == 0 and t.breaker.in_flight == 0


async def test_cc0_queue_is_bounded_while_the_gate_is_closed() -> None:
    t = RevisionThrottler(rev(0), 2)
    waiters = [asyncio.ensure_future(t.try_(instant)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await t.try_(instant)
    t.apply(pods(1))
    assert await asyncio.gather(*waiters) == ["10.0.0.0:8012"] * 2


async def test_cancelled_waiter_frees_its_place_and_never_runs() -> None:
    t = RevisionThrottler(rev(1), 1)
    gate = Gate()
    waiter = asyncio.ensure_future(t.try_(gate))
    await asyncio.sleep(0)
    assert t.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert t.waiting == 0 and t.breaker.in_flight == 0
    # Its place is free again: a new request may queue.
    t.apply(pods(1))
    assert await t.try_(instant) == "10.0.0.0:8012"
    assert gate.dests == []


async def test_waiters_are_released_in_arrival_order_when_a_pod_appears() -> None:
    t = RevisionThrottler(rev(1), 100)
    order: list[int] = []

    async def record(i: int) -> None:
        async def fn(dest: str) -> None:
            order.append(i)

        await t.try_(fn)

    tasks = [asyncio.ensure_future(record(i)) for i in range(20)]
    await asyncio.sleep(0)
    t.apply(pods(1))
    await asyncio.gather(*tasks)
    assert order == list(range(20))


async def test_trackers_survive_updates_with_their_in_flight_count() -> None:
    t = RevisionThrottler(rev(1), 100)
    t.apply(pods(1))
    gate = Gate()
    first = asyncio.ensure_future(t.try_(gate))
    await asyncio.sleep(0)
    tracker = t.trackers["10.0.0.0:8012"]
    t.apply(pods(2))
    assert t.trackers["10.0.0.0:8012"] is tracker
    # The busy pod still counts its request: the next one goes to the new pod.
    assert await t.try_(instant) == "10.0.0.1:8012"
    gate.release.set()
    await first


async def test_removed_pod_gets_no_new_requests_but_in_flight_finishes() -> None:
    t = RevisionThrottler(rev(1), 100)
    t.apply(pods(2))
    gate = Gate()
    first = asyncio.ensure_future(t.try_(gate))
    await asyncio.sleep(0)
    assert gate.dests == ["10.0.0.0:8012"]
    t.apply(["10.0.0.1:8012"])
    # Capacity is now 1 and the in-flight request still holds it: the next one waits, then
    # goes to the remaining pod, never to the removed one.
    second = asyncio.ensure_future(t.try_(instant))
    await asyncio.sleep(0.01)
    assert not second.done()
    gate.release.set()
    assert await first == "10.0.0.0:8012"
    assert await second == "10.0.0.1:8012"
    assert [await t.try_(instant) for _ in range(3)] == ["10.0.0.1:8012"] * 3


async def test_request_requeues_when_no_tracker_can_take_it() -> None:
    # Capacity says 2 but the only assigned tracker is busy: the second request must wait
    # (not spin) until the tracker is released.
    t = RevisionThrottler(rev(1), 100)
    t.apply(pods(2))
    gate = Gate()
    first = asyncio.ensure_future(t.try_(gate))
    await asyncio.sleep(0)
    t.assigned = [t.trackers["10.0.0.0:8012"]]  # as if the other pod were another's slice
    second = asyncio.ensure_future(t.try_(instant))
    await asyncio.sleep(0.02)
    assert not second.done()
    gate.release.set()
    assert await second == "10.0.0.0:8012"
    await first


async def test_retired_throttler_wakes_its_waiters_with_retired() -> None:
    t = RevisionThrottler(rev(1), 100)
    waiter = asyncio.ensure_future(t.try_(instant))
    await asyncio.sleep(0)
    t.retire()
    with pytest.raises(Retired):
        await waiter
    assert t.waiting == 0


async def test_callback_error_propagates_and_releases_both_slots() -> None:
    t = RevisionThrottler(rev(1), 100)
    t.apply(pods(1))

    async def boom(dest: str) -> None:
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError):
        await t.try_(boom)
    assert t.breaker.in_flight == 0
    assert t.trackers["10.0.0.0:8012"].in_flight == 0
    assert "waiting=0" in repr(t)
