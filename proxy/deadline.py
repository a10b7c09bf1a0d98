"""Knative's three request timeouts for one exchange, with one timer handle.

Semantics (Knative HEAD, as DESIGN.md §3 chooses):

* ``total`` (the revision timeout) is a hard maximum duration of the whole exchange, queueing
  included;
* ``response_start`` bounds the time until the response head is written (0 disables it);
* ``idle`` bounds the gap between writes, the first gap measured from the start (0 disables).

When one fires before the response started, the client gets ``504`` with the component's
message (``request timeout`` / ``activator request timeout``); after it started, the response
is cut (the connection closes without completing it). Either way the handler task is
cancelled, which releases breaker slots and closes the upstream connection through the
handler's own ``finally`` blocks.

Only one ``TimerHandle`` is live per exchange: it is armed for the earliest deadline and, when
it fires early for the idle timer because bytes were written meanwhile, re-armed.
"""

from __future__ import annotations

import asyncio

from proxy.errors import GatewayTimeout
from proxy.http1 import Exchange


class RequestTimer:
    """Arms the timeouts for ``ex`` at construction; ``cancel`` when the exchange is over."""

    __slots__ = (
        "_ex",
        "_handle",
        "_idle",
        "_loop",
        "_message",
        "_start",
        "_start_at",
        "_total_at",
        "fired",
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
        self._ex = ex
        self._loop = loop
        self._message = message
        self._start = now
        self._total_at = now + total if total > 0 else 0.0
        self._start_at = now + response_start if response_start > 0 else 0.0
        self._idle = idle
        self._handle: asyncio.TimerHandle | None = None
        #: Whether a timeout answered (or cut) the exchange.
        self.fired = False
        self._arm(now)

    def _next(self, now: float) -> float:
        candidates = []
        if self._total_at:
            candidates.append(self._total_at)
        if self._start_at and not self._ex.response_started:
            candidates.append(self._start_at)
        if self._idle > 0:
            last = self._ex.last_write or self._start
            candidates.append(max(last, self._start) + self._idle)
        return min(candidates) if candidates else 0.0

    def _arm(self, now: float) -> None:
        when = self._next(now)
        self._handle = self._loop.call_at(when, self._fire) if when else None

    def _fire(self) -> None:
        self._handle = None
        ex = self._ex
        if ex.response_done:
            return
        now = self._loop.time()
        expired = (self._total_at and now >= self._total_at) or (
            self._start_at and not ex.response_started and now >= self._start_at
        )
        if not expired and self._idle > 0:
            last = max(ex.last_write or self._start, self._start)
            expired = now - last >= self._idle
        if not expired:
            self._arm(now)
            return
        self.fired = True
        if ex.response_started:
            ex.abort()
        else:
            ex.fail(GatewayTimeout(self._message))
        task = ex.task
        if task is not None and not task.done():
            task.cancel()

    def cancel(self) -> None:
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()
