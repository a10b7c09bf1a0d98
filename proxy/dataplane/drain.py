"""The drain state machine: serve on through a quiet period, then report drained.

States: *idle* → ``drain()`` → *draining* → quiet period with no request → *drained*;
``reset()`` returns to *idle* from either of the other two. While draining, every request
pushes the end of the quiet period back. ``drain()`` callers share one drain: all of them
return when it completes or when ``reset()`` is called, and a call while drained returns at
once.

The hot path only calls ``on_request``; when idle that is one attribute test. While draining
it records the time rather than re-arming the timer; the timer, when it fires, re-arms itself
for whatever remains of the quiet period since the last request. So a request storm during a
drain costs one float store per request, not one timer-heap operation.
"""

from __future__ import annotations

import asyncio

__all__ = ["Drainer"]


class Drainer:
    """Quiet-period drainer. All methods must be called on the event loop's thread."""

    __slots__ = ("_done", "_drained", "_last_request", "_loop", "_quiet", "_timer", "draining")

    def __init__(self, quiet_period: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if quiet_period < 0:
            raise ValueError(f"quiet_period must be >= 0, got {quiet_period}")
        self._quiet = quiet_period
        self._loop = loop
        #: True from the start of a drain until ``reset()``, including once drained
        #: (read-only outside this class: a plain attribute so that the request path's test
        #: costs no call).
        self.draining = False
        self._drained = False
        self._last_request = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] | None = None

    @property
    def drained(self) -> bool:
        """True once a quiet period passed with no request, until ``reset()``."""
        return self._drained

    def on_request(self) -> None:
        """Note a (non-probe) request; while draining this restarts the quiet period."""
        if self.draining and not self._drained:
            self._last_request = self._get_loop().time()

    async def drain(self) -> None:
        """Start draining if not already, and wait until the drain completes or is reset.

        Returns at once if a drain already completed. Cancelling one caller does not affect
        the drain or the other callers.
        """
        if self._drained:
            return
        if self._done is None:
            loop = self._get_loop()
            self.draining = True
            self._done = loop.create_future()
            self._last_request = loop.time()
            self._timer = loop.call_later(self._quiet, self._on_timer)
        await asyncio.shield(self._done)

    def reset(self) -> None:
        """Stop any drain, wake blocked ``drain()`` callers and return to idle."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_result(None)
        self.draining = False
        self._drained = False

    def _on_timer(self) -> None:
        loop = self._get_loop()
        remaining = self._last_request + self._quiet - loop.time()
        if remaining > 0:
            self._timer = loop.call_later(remaining, self._on_timer)
            return
        self._timer = None
        self._drained = True
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def __repr__(self) -> str:
        state = "drained" if self._drained else "draining" if self.draining else "idle"
        return f"Drainer({state}, quiet_period={self._quiet})"
