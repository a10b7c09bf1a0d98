"""Breaker and semaphore behaviour (Knative ``breaker_test.go`` behaviours, plus cancellation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from proxy.dataplane.breaker import Breaker, Semaphore
from proxy.errors import QueueFull


async def until(cond: Callable[[], bool], spins: int = 100) -> None:
    """Let other tasks run (without sleeping on a timer) until ``cond`` holds."""
    for _ in range(spins):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def in_flight_is(breaker: Breaker, n: int) -> Callable[[], bool]:
    return lambda: breaker.in_flight == n


async def run_in_breaker(breaker: Breaker, gate: asyncio.Event) -> None:
    await breaker.acquire()
    try:
        await gate.wait()
    finally:
        breaker.release()


# --- constructor -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "max_c", "initial"),
    [(0, 1, 1), (-1, 1, 1), (1, -1, 0), (1, 1, -1), (1, 1, 2)],
)
def test_breaker_rejects_invalid_parameters(depth: int, max_c: int, initial: int) -> None:
    with pytest.raises(ValueError):
        Breaker(depth, max_c, initial)


def test_breaker_accepts_zero_capacity_and_reports_its_parameters() -> None:
    breaker = Breaker(queue_depth=10, max_concurrency=5, initial_capacity=0)
    assert breaker.capacity == 0
    assert breaker.max_concurrency == 5
    assert breaker.in_flight == 0
    assert "in_flight=0" in repr(breaker)


# --- reserve ---------------------------------------------------------------------------------


def test_breaker_reserve_fails_while_only_slot_is_held_and_works_after_release() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    release = breaker.reserve()
    assert release is not None
    assert breaker.reserve() is None
    assert breaker.in_flight == 1
    release()
    assert breaker.in_flight == 0
    again = breaker.reserve()
    assert again is not None
    again()


def test_breaker_reserve_release_callback_is_idempotent() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=2, initial_capacity=2)
    first = breaker.reserve()
    second = breaker.reserve()
    assert first is not None and second is not None
    first()
    first()
    assert breaker.in_flight == 1
    second()
    assert breaker.in_flight == 0


def test_breaker_reserve_holds_nothing_when_capacity_is_zero() -> None:
    breaker = Breaker(queue_depth=5, max_concurrency=1, initial_capacity=0)
    assert breaker.reserve() is None
    assert breaker.in_flight == 0


async def test_breaker_reserve_fails_while_acquired_request_executes() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    gate = asyncio.Event()
    task = asyncio.create_task(run_in_breaker(breaker, gate))
    await until(lambda: breaker.in_flight == 1)
    assert breaker.reserve() is None
    gate.set()
    await task
    release = breaker.reserve()
    assert release is not None
    release()


# --- acquire / overload ----------------------------------------------------------------------


async def test_breaker_rejects_when_queue_full() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    gate = asyncio.Event()
    tasks = [asyncio.create_task(run_in_breaker(breaker, gate)) for _ in range(2)]
    await until(lambda: breaker.in_flight == 2)
    with pytest.raises(QueueFull) as info:
        await breaker.acquire()
    assert info.value.status == 503
    assert info.value.body() == b"pending request queue full\n"
    assert breaker.in_flight == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert breaker.in_flight == 0


async def test_breaker_acquire_fast_path_takes_both_slots() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=2, initial_capacity=2)
    await breaker.acquire()
    assert breaker.in_flight == 1
    breaker.release()
    assert breaker.in_flight == 0


async def test_breaker_with_zero_capacity_queues_until_capacity_is_raised() -> None:
    breaker = Breaker(queue_depth=2, max_concurrency=1, initial_capacity=0)
    done: list[int] = []

    async def caller(i: int) -> None:
        await breaker.acquire()
        done.append(i)
        breaker.release()

    tasks = [asyncio.create_task(caller(i)) for i in range(2)]
    await until(lambda: breaker.in_flight == 2)
    assert done == []
    breaker.update_concurrency(1)
    await asyncio.gather(*tasks)
    assert done == [0, 1]  # FIFO, one after the other
    assert breaker.in_flight == 0


async def test_breaker_never_fails_for_steady_arrivals_at_capacity() -> None:
    breaker = Breaker(queue_depth=10, max_concurrency=5, initial_capacity=5)

    async def caller() -> None:
        await breaker.acquire()
        try:
            await asyncio.sleep(0)
        finally:
            breaker.release()

    for _ in range(20):
        await asyncio.gather(*(caller() for _ in range(5)))
    # Exactly the admission limit at once: queued but never rejected.
    await asyncio.gather(*(caller() for _ in range(15)))
    assert breaker.in_flight == 0


async def test_breaker_serves_waiters_in_arrival_order() -> None:
    breaker = Breaker(queue_depth=10, max_concurrency=1, initial_capacity=1)
    order: list[int] = []
    gate = asyncio.Event()
    holder = asyncio.create_task(run_in_breaker(breaker, gate))
    await until(lambda: breaker.in_flight == 1)

    async def caller(i: int) -> None:
        await breaker.acquire()
        order.append(i)
        breaker.release()

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(caller(i)))
        await until(in_flight_is(breaker, i + 2))
    gate.set()
    await asyncio.gather(holder, *tasks)
    assert order == [0, 1, 2, 3, 4]


# --- cancellation ----------------------------------------------------------------------------


async def test_breaker_cancelled_waiter_frees_its_admission_slot_at_once() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    gate = asyncio.Event()
    holder = asyncio.create_task(run_in_breaker(breaker, gate))
    await until(lambda: breaker.in_flight == 1)
    waiter = asyncio.create_task(breaker.acquire())
    await until(lambda: breaker.in_flight == 2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert breaker.in_flight == 1
    # Later requests are unaffected: one more can queue and then run.
    follower = asyncio.create_task(run_in_breaker(breaker, gate))
    await until(lambda: breaker.in_flight == 2)
    gate.set()
    await asyncio.gather(holder, follower)
    assert breaker.in_flight == 0


async def test_breaker_waiter_cancelled_by_timeout_frees_both_slots() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(breaker.acquire(), timeout=0.02)
    assert breaker.in_flight == 0
    breaker.update_concurrency(1)
    assert breaker.reserve() is not None


async def test_semaphore_waiter_cancelled_after_grant_passes_slot_on() -> None:
    sem = Semaphore(1)
    await sem.acquire()
    first = asyncio.create_task(sem.acquire())
    second = asyncio.create_task(sem.acquire())
    await asyncio.sleep(0)  # both tasks reach their wait
    sem.release()  # granted to `first`, which has not resumed yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot moved on instead of leaking
    assert sem.in_use == 1
    sem.release()
    assert sem.in_use == 0


async def test_semaphore_newcomer_is_not_stranded_behind_a_cancelled_waiter() -> None:
    sem = Semaphore(1)
    await sem.acquire()
    stale = asyncio.create_task(sem.acquire())
    await asyncio.sleep(0)
    stale.cancel()  # its future is cancelled, but its cleanup has not run yet
    sem.release()
    assert sem.in_use == 0
    await sem.acquire()  # must not queue behind the stale entry
    with pytest.raises(asyncio.CancelledError):
        await stale
    assert sem.in_use == 1


# --- update_concurrency under load -----------------------------------------------------------


async def test_breaker_capacity_follows_update_concurrency() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=0)
    breaker.update_concurrency(1)
    assert breaker.capacity == 1
    breaker.update_concurrency(0)
    assert breaker.capacity == 0
    with pytest.raises(ValueError):
        breaker.update_concurrency(-1)


async def test_breaker_raising_concurrency_under_load_starts_exactly_the_added_waiters() -> None:
    breaker = Breaker(queue_depth=10, max_concurrency=10, initial_capacity=1)
    gate = asyncio.Event()
    running: list[int] = []

    async def caller(i: int) -> None:
        await breaker.acquire()
        running.append(i)
        try:
            await gate.wait()
        finally:
            breaker.release()

    tasks = [asyncio.create_task(caller(i)) for i in range(6)]
    await until(lambda: running == [0] and breaker.in_flight == 6)
    breaker.update_concurrency(3)
    await until(lambda: len(running) == 3)
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == [0, 1, 2]
    gate.set()
    await asyncio.gather(*tasks)
    assert sorted(running) == list(range(6))


async def test_breaker_lowering_concurrency_under_load_keeps_holders_and_blocks_new_grants() -> (
    None
):
    breaker = Breaker(queue_depth=10, max_concurrency=3, initial_capacity=3)
    holders = [breaker.reserve() for _ in range(3)]
    assert all(h is not None for h in holders)
    waiter = asyncio.create_task(breaker.acquire())
    await until(lambda: breaker.in_flight == 4)
    breaker.update_concurrency(1)
    assert breaker.in_flight == 4  # nobody preempted
    for i in range(2):
        release = holders[i]
        assert release is not None
        release()
        await asyncio.sleep(0)
        assert not waiter.done()  # still over the new capacity
    last = holders[2]
    assert last is not None
    last()
    await waiter  # now under capacity: the waiter is granted
    assert breaker.in_flight == 1
    breaker.release()


# --- semaphore -------------------------------------------------------------------------------


async def test_semaphore_with_no_capacity_blocks_acquire_and_fails_try_acquire() -> None:
    sem = Semaphore(0)
    assert sem.try_acquire() is False
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sem.acquire(), timeout=0.02)
    assert sem.in_use == 0


async def test_semaphore_raising_capacity_by_one_releases_exactly_one_waiter() -> None:
    sem = Semaphore(0)
    tasks = [asyncio.create_task(sem.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    sem.update_capacity(1)
    await until(lambda: sum(t.done() for t in tasks) == 1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sum(t.done() for t in tasks) == 1
    assert sem.in_use == 1
    sem.release()
    await asyncio.gather(*tasks)
    sem.release()
    assert sem.in_use == 0


def test_semaphore_release_more_than_acquired_raises() -> None:
    sem = Semaphore(2)
    with pytest.raises(RuntimeError):
        sem.release()
    assert sem.try_acquire()
    sem.release()
    with pytest.raises(RuntimeError):
        sem.release()


def test_semaphore_capacity_changes_are_visible_while_slots_are_held() -> None:
    sem = Semaphore(2)
    assert sem.try_acquire()
    sem.update_capacity(5)
    assert (sem.capacity, sem.in_use) == (5, 1)
    sem.update_capacity(0)
    assert (sem.capacity, sem.in_use) == (0, 1)
    assert not sem.try_acquire()
    sem.release()
    assert (sem.capacity, sem.in_use) == (0, 0)


def test_semaphore_rejects_negative_capacity() -> None:
    with pytest.raises(ValueError):
        Semaphore(-1)
    with pytest.raises(ValueError):
        Semaphore(1).update_capacity(-1)


# ----------------------------------------------------------------- tickets (no-task waits)


async def test_ticket_is_granted_at_once_when_a_slot_is_free() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    ran: list[str] = []
    ticket = breaker.enqueue(ran.append, "go")
    assert breaker.in_flight == 1
    await asyncio.sleep(0)  # the callback runs from the loop, never inside enqueue
    assert ran == ["go"]
    assert ticket.state == ticket.RUNNING
    breaker.release()
    assert breaker.in_flight == 0


async def test_ticket_waits_its_turn_and_runs_after_release() -> None:
    breaker = Breaker(queue_depth=2, max_concurrency=1, initial_capacity=1)
    assert breaker.try_acquire()
    ran: list[int] = []
    breaker.enqueue(ran.append, 1)
    breaker.enqueue(ran.append, 2)
    await asyncio.sleep(0)
    assert ran == []
    breaker.release()
    await asyncio.sleep(0)
    assert ran == [1]  # FIFO, one slot
    breaker.release()
    await asyncio.sleep(0)
    assert ran == [1, 2]


async def test_ticket_enqueue_raises_queue_full_when_admission_is_full() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    assert breaker.try_acquire()
    breaker.enqueue(lambda _: None, None)
    assert breaker.in_flight == 2  # queue_depth + max_concurrency: the next one is refused
    with pytest.raises(QueueFull):
        breaker.enqueue(lambda _: None, None)


async def test_cancelled_waiting_ticket_frees_its_place_and_never_runs() -> None:
    breaker = Breaker(queue_depth=2, max_concurrency=1, initial_capacity=1)
    assert breaker.try_acquire()
    ran: list[int] = []
    first = breaker.enqueue(ran.append, 1)
    breaker.enqueue(ran.append, 2)
    first.cancel()
    assert breaker.in_flight == 2
    breaker.release()
    await asyncio.sleep(0)
    assert ran == [2]


async def test_ticket_cancelled_after_grant_hands_the_slot_on() -> None:
    breaker = Breaker(queue_depth=2, max_concurrency=1, initial_capacity=1)
    assert breaker.try_acquire()
    ran: list[int] = []
    first = breaker.enqueue(ran.append, 1)
    breaker.enqueue(ran.append, 2)
    breaker.release()  # grants `first`; its callback is only scheduled
    first.cancel()  # gives the granted slot back, which goes to the second ticket
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ran == [2]
    breaker.release()
    assert breaker.in_flight == 0


async def test_ticket_cancel_after_its_callback_ran_changes_nothing() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    ticket = breaker.enqueue(lambda _: None, None)
    await asyncio.sleep(0)
    ticket.cancel()
    assert breaker.in_flight == 1  # the owner still holds its slots and releases them
    breaker.release()
    assert breaker.in_flight == 0


async def test_tickets_granted_together_run_in_order_from_one_loop_callback() -> None:
    breaker = Breaker(queue_depth=3, max_concurrency=3, initial_capacity=0)
    ran: list[int] = []
    for i in range(3):
        breaker.enqueue(ran.append, i)
    breaker.update_concurrency(3)  # grants all three at once
    assert ran == []  # never inside the call that granted them
    await asyncio.sleep(0)
    assert ran == [0, 1, 2]


async def test_a_failing_ticket_callback_does_not_strand_the_ones_after_it() -> None:
    loop = asyncio.get_running_loop()
    errors: list[BaseException | None] = []
    loop.set_exception_handler(lambda _, ctx: errors.append(ctx.get("exception")))
    breaker = Breaker(queue_depth=3, max_concurrency=3, initial_capacity=0)
    ran: list[int] = []

    def boom(_: int) -> None:
        raise RuntimeError("handler bug")

    breaker.enqueue(ran.append, 0)
    breaker.enqueue(boom, 1)
    breaker.enqueue(ran.append, 2)
    breaker.update_concurrency(3)
    for _ in range(3):
        await asyncio.sleep(0)
    assert ran == [0, 2]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    loop.set_exception_handler(None)


async def test_ticket_leave_gives_the_place_back_then_tells_the_owner_once() -> None:
    breaker = Breaker(queue_depth=2, max_concurrency=1, initial_capacity=1)
    assert breaker.try_acquire()
    ran: list[str] = []
    left: list[str] = []
    ticket = breaker.enqueue(ran.append, "request", left.append)
    ticket.leave()
    assert left == ["request"]
    assert breaker.in_flight == 1  # only the holder of the slot is left
    breaker.release()
    await asyncio.sleep(0)
    assert ran == [] and breaker.in_flight == 0


async def test_ticket_left_between_grant_and_run_never_runs_and_frees_both_slots() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    ran: list[int] = []
    left: list[int] = []
    ticket = breaker.enqueue(ran.append, 1, left.append)  # granted at once, runs later
    ticket.leave()
    await asyncio.sleep(0)
    assert ran == [] and left == [1]
    assert breaker.in_flight == 0


async def test_take_holds_a_free_slot_at_once_else_queues_else_refuses() -> None:
    breaker = Breaker(queue_depth=1, max_concurrency=1, initial_capacity=1)
    ran: list[str] = []
    assert breaker.take(ran.append, "first") is None  # both slots held now
    ticket = breaker.take(ran.append, "second")
    assert ticket is not None and breaker.in_flight == 2
    with pytest.raises(QueueFull):
        breaker.take(ran.append, "third")
    assert breaker.in_flight == 2  # a refusal holds nothing
    breaker.release()  # the first is done: the second gets its slot, from the loop
    assert ran == []
    await asyncio.sleep(0)
    assert ran == ["second"]
    breaker.release()
    assert breaker.in_flight == 0
