"""Running a component on uvloop, with signal handling in one place."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on a fresh uvloop event loop and return its result."""

    async def wrapper() -> T:
        return await main()

    return uvloop.run(wrapper())


def settle_gc() -> None:
    """Move everything allocated during start-up out of the collector's sight.

    Imports, configuration and servers are live for the whole process; freezing them means
    collections triggered by request traffic only walk the young objects requests make,
    which keeps collection pauses (and so tail latency) short.
    """
    gc.collect()
    gc.freeze()
    # Requests free their objects by reference counting; a young-generation collection
    # mostly rescans the objects of requests still in flight. Collecting 10x less often
    # cuts that repeated work; the few cycles (error paths) are still collected.
    gc.set_threshold(7000, 10, 10)
