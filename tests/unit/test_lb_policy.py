"""Pod trackers, LB policies and the infinite breaker (reference §5.9 and §5.10)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from activator.lb_policy import (
    InfiniteBreaker,
    PodTracker,
    RoundRobin,
    first_available,
    noop,
    policy_for,
    random_choice_2,
)


def pods(n: int, cc: int) -> list[PodTracker]:
    return [PodTracker(f"10.0.0.{i}:8012", cc) for i in range(n)]


async def until(cond: Callable[[], bool], spins: int = 100) -> None:
    for _ in range(spins):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


# --- PodTracker -------------------------------------------------------------------------


def test_unlimited_tracker_reports_capacity_one_and_always_reserves() -> None:
    t = PodTracker("a:1", 0)
    assert t.capacity == 1
    callbacks = [t.reserve() for _ in range(100)]
    assert all(cb is not None for cb in callbacks)
    t.update_capacity(0)  # ignored: nothing to limit
    assert t.capacity == 1
    assert t.reserve() is not None


def test_limited_tracker_reserves_up_to_cc_then_refuses() -> None:
    t = PodTracker("a:1", 2)
    assert t.capacity == 2
    first, second = t.reserve(), t.reserve()
    assert first is not None and second is not None
    assert t.reserve() is None
    assert t.in_flight == 2
    first()
    first()  # idempotent
    assert t.in_flight == 1
    assert t.reserve() is not None


def test_limited_tracker_update_capacity_resizes_its_breaker() -> None:
    t = PodTracker("a:1", 42)
    t.update_capacity(11)
    assert t.capacity == 11
    held = [t.reserve() for _ in range(11)]
    assert all(cb is not None for cb in held)
    assert t.reserve() is None


def test_tracker_rejects_negative_cc() -> None:
    with pytest.raises(ValueError):
        PodTracker("a:1", -1)


# --- random choice of 2 ------------------------------------------------------------------


def test_random_choice_empty_returns_nothing() -> None:
    release, tracker = random_choice_2([], random.Random(1))
    assert tracker is None
    assert release is noop


def test_random_choice_single_tracker_weight_goes_up_and_down() -> None:
    t = PodTracker("a:1", 0)
    rng = random.Random(1)
    r1, p1 = random_choice_2([t], rng)
    r2, p2 = random_choice_2([t], rng)
    assert p1 is t and p2 is t
    assert t.weight == 2
    r1()
    r1()  # idempotent
    assert t.weight == 1
    r2()
    assert t.weight == 0


def test_random_choice_two_equal_trackers_both_receive_traffic() -> None:
    ts = pods(2, 0)
    rng = random.Random(3)
    seen = set()
    for _ in range(100):
        release, t = random_choice_2(ts, rng)
        assert t is not None
        seen.add(t.dest)
        release()
    assert seen == {ts[0].dest, ts[1].dest}


@pytest.mark.parametrize("n", [2, 3])
def test_random_choice_next_pick_goes_to_less_loaded_tracker(n: int) -> None:
    ts = pods(n, 0)
    rng = random.Random(5)
    # Load all but the last tracker twice; every pick that samples the last must choose it.
    for t in ts[:-1]:
        t.weight = 2
    picked_last = 0
    for _ in range(50):
        release, got = random_choice_2(ts, rng)
        assert got is not None
        picked_last += got is ts[-1]
        release()
    # With two trackers the idle one always wins; with three it wins whenever sampled (2/3).
    if n == 2:
        assert picked_last == 50
    else:
        assert 25 <= picked_last < 50
    assert all(t.weight == (2 if i < n - 1 else 0) for i, t in enumerate(ts))


def test_random_choice_three_trackers_spreads_and_release_restores_weights() -> None:
    ts = pods(3, 0)
    rng = random.Random(11)
    held = [random_choice_2(ts, rng)[0] for _ in range(30)]
    weights = sorted(t.weight for t in ts)
    assert sum(weights) == 30
    assert weights[-1] - weights[0] <= 2  # the less-loaded one keeps winning
    for release in held:
        release()
    assert [t.weight for t in ts] == [0, 0, 0]


# --- first available ---------------------------------------------------------------------


def test_first_available_returns_nothing_when_the_only_slot_is_taken() -> None:
    (t,) = pods(1, 1)
    held = t.reserve()
    assert held is not None
    release, got = first_available([t])
    assert got is None and release is noop


def test_first_available_chooses_second_when_first_full_and_clumps_on_first() -> None:
    ts = pods(2, 1)
    r1, p1 = first_available(ts)
    r2, p2 = first_available(ts)
    assert (p1, p2) == (ts[0], ts[1])
    r1()
    _, p3 = first_available(ts)
    assert p3 is ts[0]  # the first pod is always preferred
    r2()


# --- round robin -------------------------------------------------------------------------


def test_round_robin_picks_in_order() -> None:
    ts = pods(3, 10)
    rr = RoundRobin()
    got = [rr.pick(ts)[1] for _ in range(6)]
    assert got == ts + ts


def test_round_robin_resets_when_the_list_shrinks() -> None:
    ts = pods(3, 10)
    rr = RoundRobin()
    rr.pick(ts)
    rr.pick(ts)
    rr.pick(ts)
    assert rr.index == 3
    _, t = rr.pick(ts[:2])
    assert t is ts[0]
    assert rr.index == 1


def test_round_robin_skips_full_trackers_and_picks_freed_one_next() -> None:
    ts = pods(3, 1)
    rr = RoundRobin()
    r0, p0 = rr.pick(ts)
    r1, p1 = rr.pick(ts)
    r2, p2 = rr.pick(ts)
    assert [p0, p1, p2] == ts
    release, none = rr.pick(ts)
    assert none is None and release is noop  # all full
    r1()
    _, again = rr.pick(ts)
    assert again is ts[1]
    assert rr.index == 2
    r0()
    _, skip = rr.pick(ts)  # index 2 is full: skip to 0
    assert skip is ts[0]
    r2()


def test_round_robin_reuses_tracker_with_spare_slot_when_others_full() -> None:
    ts = pods(3, 2)
    for t in ts[1:]:
        assert t.reserve() is not None
        assert t.reserve() is not None
    rr = RoundRobin()
    got = [rr.pick(ts)[1] for _ in range(2)]
    assert got == [ts[0], ts[0]]
    assert rr.pick(ts)[1] is None


# --- policy selection --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cc", "want"),
    [(0, "random"), (1, "first"), (2, "first"), (3, "first"), (4, "rr"), (100, "rr")],
)
def test_policy_for_chooses_by_container_concurrency(cc: int, want: str) -> None:
    picker = policy_for(cc, random.Random(1))
    if want == "first":
        assert picker is first_available
    elif want == "rr":
        assert isinstance(getattr(picker, "__self__", None), RoundRobin)
    else:
        ts = pods(2, 0)
        _, t = picker(ts)
        assert t in ts and t is not None and t.weight == 1


def test_policy_for_round_robin_state_is_per_picker() -> None:
    ts = pods(2, 10)
    a, b = policy_for(4), policy_for(4)
    assert a(ts)[1] is ts[0]
    assert b(ts)[1] is ts[0]
    assert a(ts)[1] is ts[1]


# --- infinite breaker --------------------------------------------------------------------


def test_infinite_breaker_starts_closed_and_follows_concurrency() -> None:
    b = InfiniteBreaker()
    assert b.capacity == 0
    for n, want in [(1, 1), (0, 0), (10, 1), (2**31 - 1, 1), (-1, 0)]:
        b.update_concurrency(n)
        assert b.capacity == want


def test_infinite_breaker_reserve_always_succeeds() -> None:
    b = InfiniteBreaker()
    assert b.reserve() is not None
    b.update_concurrency(1)
    assert b.reserve() is not None


async def test_infinite_breaker_closed_blocks_and_cancellation_raises() -> None:
    b = InfiniteBreaker()
    task = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_infinite_breaker_open_passes_even_when_cancelling() -> None:
    b = InfiniteBreaker()
    b.update_concurrency(1)
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    await b.acquire()  # does not yield, so the pending cancel is not delivered here
    b.release()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(0)  # ...but at the next real suspension
    assert current.uncancel() == 0


async def test_infinite_breaker_closing_again_blocks() -> None:
    b = InfiniteBreaker()
    b.update_concurrency(1)
    await asyncio.wait_for(b.acquire(), 1)
    b.update_concurrency(0)
    task = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_infinite_breaker_releases_all_waiters_when_it_opens() -> None:
    b = InfiniteBreaker()
    tasks = [asyncio.create_task(b.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in tasks)
    b.update_concurrency(1)
    b.update_concurrency(0)  # closing again before they resume does not strand them
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    await until(lambda: all(t.done() for t in tasks))
