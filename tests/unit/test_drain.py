"""Drainer state machine (Knative ``network/handlers/drain.go`` behaviour).

The quiet period is the thing under test, so these use short real timers (20 ms).
"""

from __future__ import annotations

import asyncio

import pytest

from proxy.dataplane.drain import Drainer

QUIET = 0.02


def test_new_drainer_is_idle_and_on_request_is_a_no_op() -> None:
    drainer = Drainer(QUIET)
    drainer.on_request()  # no loop needed while idle
    assert not drainer.draining
    assert not drainer.drained


def test_drainer_rejects_negative_quiet_period() -> None:
    with pytest.raises(ValueError):
        Drainer(-1.0)


async def test_drain_returns_after_quiet_period() -> None:
    loop = asyncio.get_running_loop()
    drainer = Drainer(QUIET, loop)
    start = loop.time()
    await drainer.drain()
    assert loop.time() - start >= QUIET * 0.9
    assert drainer.draining
    assert drainer.drained


async def test_drain_sets_draining_at_once() -> None:
    drainer = Drainer(QUIET)
    task = asyncio.create_task(drainer.drain())
    await asyncio.sleep(0)
    assert drainer.draining
    assert not drainer.drained
    await task


async def test_requests_while_draining_restart_the_quiet_period() -> None:
    # A quiet period long against the steps between requests, so that a loaded machine's
    # slow wake-ups cannot end it between two of them (with 20 ms it once did, in CI).
    quiet = 1.0
    loop = asyncio.get_running_loop()
    drainer = Drainer(quiet, loop)
    task = asyncio.create_task(drainer.drain())
    await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(quiet / 10)
        drainer.on_request()
        assert not task.done()
    last = loop.time()
    await task
    assert loop.time() - last >= quiet * 0.9  # a full quiet period after the last request


async def test_concurrent_drain_callers_share_one_drain() -> None:
    loop = asyncio.get_running_loop()
    drainer = Drainer(QUIET, loop)
    start = loop.time()
    first = asyncio.create_task(drainer.drain())
    await asyncio.sleep(QUIET / 2)
    # A second caller joins the running drain rather than starting a fresh quiet period.
    await asyncio.gather(first, drainer.drain())
    assert loop.time() - start < 2 * QUIET + 0.5


async def test_drain_after_completion_returns_at_once() -> None:
    drainer = Drainer(QUIET)
    await drainer.drain()
    await asyncio.wait_for(drainer.drain(), timeout=QUIET / 4)
    assert drainer.drained


async def test_reset_wakes_blocked_drain_callers_and_leaves_draining() -> None:
    drainer = Drainer(60.0)  # would never finish on its own within the test
    callers = [asyncio.create_task(drainer.drain()) for _ in range(2)]
    await asyncio.sleep(0)
    assert drainer.draining
    drainer.reset()
    await asyncio.wait_for(asyncio.gather(*callers), timeout=1.0)
    assert not drainer.draining
    assert not drainer.drained


async def test_reset_after_drained_allows_a_new_drain() -> None:
    drainer = Drainer(QUIET)
    await drainer.drain()
    drainer.reset()
    assert not drainer.drained
    task = asyncio.create_task(drainer.drain())
    await asyncio.sleep(0)
    assert drainer.draining and not drainer.drained
    await task
    assert drainer.drained


async def test_cancelling_one_drain_caller_does_not_stop_the_drain() -> None:
    drainer = Drainer(QUIET)
    first = asyncio.create_task(drainer.drain())
    second = asyncio.create_task(drainer.drain())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert drainer.drained
