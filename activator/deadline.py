"""Per-request timeouts of the activator, from the revision spec (reference §1.7, §2.2 step 9).

Three limits, HEAD semantics (DESIGN §3), all measured from the request's arrival:

* ``timeoutSeconds``: a hard maximum duration;
* ``responseStartTimeoutSeconds`` (0 = off): the response head must have started by then;
* ``idleTimeoutSeconds`` (0 = off): no more than that without writing to the client; before
  the first write the arrival time counts as the last write.

When a limit expires before the response started, the client gets 504 ``activator request
timeout``; after it started, the response is cut (the connection aborted). Either way the
handler task is cancelled, which frees its queue place or aborts the upstream exchange.

``next_expiry`` is the pure decision; ``RequestDeadline`` keeps exactly one loop timer per
request and re-arms it for whatever limit is next, so no timer fires per write.
"""

from __future__ import annotations

import asyncio
import math

from proxy.errors import GatewayTimeout
from proxy.http1 import Exchange

__all__ = ["TIMEOUT_BODY", "RequestDeadline", "next_expiry"]

TIMEOUT_BODY = "activator request timeout"


def next_expiry(
    start: float,
    timeout: float,
    response_start_timeout: float,
    idle_timeout: float,
    started: bool,
    last_write: float,
) -> float:
    """The loop time at which the earliest applicable limit expires (``inf`` for none)."""
    at = start + timeout if timeout > 0 else math.inf
    if response_start_timeout > 0 and not started:
        at = min(at, start + response_start_timeout)
    if idle_timeout > 0:
        at = min(at, max(start, last_write) + idle_timeout)
    return at


class RequestDeadline:
    """Enforces the three limits on one exchange; ``cancel`` when the handler finishes."""

    __slots__ = ("_handle", "_loop", "ex", "fired", "idle", "response_start", "start", "timeout")

    def __init__(
        self,
        ex: Exchange,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        response_start_timeout: float = 0.0,
        idle_timeout: float = 0.0,
        start: float | None = None,
    ) -> None:
        self.ex = ex
        self._loop = loop
        self.start = loop.time() if start is None else start
        self.timeout = timeout
        self.response_start = response_start_timeout
        self.idle = idle_timeout
        self.fired = False
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        ex = self.ex
        at = next_expiry(
            self.start, self.timeout, self.response_start, self.idle, ex.response_started,
            ex.last_write,
        )  # fmt: skip
        self._handle = None if at == math.inf else self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
        ex = self.ex
        if ex.response_done:
            return  # finished in the meantime; the handler is about to cancel us
        at = next_expiry(
            self.start, self.timeout, self.response_start, self.idle, ex.response_started,
            ex.last_write,
        )  # fmt: skip
        if at > self._loop.time():
            self._handle = self._loop.call_at(at, self._on_timer)
            return
        self.fired = True
        if ex.response_started:
            ex.abort()
        else:
            ex.fail(GatewayTimeout(TIMEOUT_BODY))
        if ex.task is not None and not ex.task.done():
            ex.task.cancel()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
