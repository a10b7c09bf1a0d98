"""Knative's three request timeouts for one exchange, checked by one shared sweeper.

Semantics (Knative HEAD, as DESIGN.md §3 chooses):

* ``total`` (the revision timeout) is a hard maximum duration of the whole exchange, queueing
  included;
* ``response_start`` bounds the time until the response head is written (0 disables it);
* ``idle`` bounds the gap between writes, the first gap measured from the start (0 disables).

When one fires before the response started, the client gets ``504`` with the component's
message (``request timeout`` / ``activator request timeout``); after it started, the response
is cut (the connection closes without completing it). Either way the exchange's handler is
cancelled, which releases breaker slots and closes the upstream connection through the
handler's own ``finally`` blocks.

Why a sweeper and not ``loop.call_at`` per request: on uvloop each timer is a libuv handle
allocated, started, stopped and closed per request, a measurable share of the hot path. One
periodic task per event loop checks every live timer instead, so a request costs one dict
insert and one delete. Timeouts fire up to ``SWEEP_INTERVAL`` late, far inside the ±1 s the
reliability catalogue asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from proxy.errors import GatewayTimeout
from proxy.http1 import Exchange

#: How often live request timers are checked (seconds).
SWEEP_INTERVAL = 0.1

_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)


class _Sweeper:
    """All live ``RequestTimer``s of one event loop, and the task that checks them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timers: set[RequestTimer] = set()
        self.task: asyncio.Task[None] | None = None
        #: Whether ``task`` is live; kept as a flag so that arming a timer makes no call.
        self.running = False

    def start(self) -> None:
        self.running = True
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            with contextlib.suppress(asyncio.CancelledError):
                while self.timers:
                    await asyncio.sleep(SWEEP_INTERVAL)
                    now = self.loop.time()
                    for timer in list(self.timers):
                        if now >= timer.next_at:
                            timer.check(now)
        finally:
            self.running = False


_last: tuple[asyncio.AbstractEventLoop | None, _Sweeper | None] = (None, None)


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    global _last
    cached_loop, cached = _last
    if cached_loop is loop and cached is not None:
        return cached  # one loop per process in practice: skip the weak dict
    sweeper = _SWEEPERS.get(loop)
    if sweeper is None:
        sweeper = _Sweeper(loop)
        _SWEEPERS[loop] = sweeper
    _last = (loop, sweeper)
    return sweeper


class RequestTimer:
    """Arms the timeouts for ``ex`` at construction; ``cancel`` when the exchange is over."""

    __slots__ = (
        "_ex",
        "_idle",
        "_message",
        "_start",
        "_start_at",
        "_sweeper",
        "_total_at",
        "fired",
        "next_at",
    )

    def __init__(
        self,
        ex: Exchange,
        loop: asyncio.AbstractEventLoop,
        total: float,
        response_start: float = 0.0,
        idle: float = 0.0,
        message: str = "request timeout",
    ) -> None:
        now = loop.time()
        self._ex: Exchange | None = ex
        self._message = message
        self._start = now
        self._total_at = now + total if total > 0 else 0.0
        self._start_at = now + response_start if response_start > 0 else 0.0
        self._idle = idle
        #: Whether a timeout answered (or cut) the exchange.
        self.fired = False
        # The common case (only the revision timeout) needs no min() over candidates.
        self.next_at = self._total_at if not (response_start or idle) else self._next()
        self._sweeper: _Sweeper | None = None
        if self.next_at:
            cached_loop, sweeper = _last
            if cached_loop is not loop or sweeper is None:
                sweeper = _sweeper(loop)
            self._sweeper = sweeper
            sweeper.timers.add(self)
            if not sweeper.running:
                sweeper.start()

    def _next(self) -> float:
        """The earliest moment one of the timeouts could expire."""
        ex = self._ex
        if ex is None:
            return 0.0
        when = self._total_at or float("inf")
        if self._start_at and not ex.response_started:
            when = min(when, self._start_at)
        if self._idle > 0:
            last = max(ex.last_write, self._start)
            when = min(when, last + self._idle)
        return when if when != float("inf") else 0.0

    def check(self, now: float) -> None:
        """Expire the exchange if a timeout is due, else note when to look again."""
        ex = self._ex
        if ex is None:
            return  # cancelled while a sweep was under way
        if ex.response_done:
            self.cancel()
            return
        expired = (self._total_at and now >= self._total_at) or (
            self._start_at and not ex.response_started and now >= self._start_at
        )
        if not expired and self._idle > 0:
            expired = now - max(ex.last_write, self._start) >= self._idle
        if not expired:
            self.next_at = self._next()
            return
        self.fired = True
        self.cancel()
        if ex.response_started:
            ex.abort()
        else:
            ex.fail(GatewayTimeout(self._message))
        ex.cancel()

    def cancel(self) -> None:
        """Disarm. The exchange is forgotten too: handlers keep their timer on the exchange
        (``ex.user``), and a timer that still pointed back would make every request a
        reference cycle, left for the cyclic collector instead of freed at once."""
        self._ex = None
        sweeper = self._sweeper
        if sweeper is not None:
            self._sweeper = None
            sweeper.timers.discard(self)
