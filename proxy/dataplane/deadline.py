"""Knative's three request timeouts, as one shared policy checked by one sweeper per loop.

Semantics (Knative HEAD, as DESIGN.md §3 chooses), all counted from the moment the request
head was parsed (``Exchange.started_at``):

* ``total`` (the revision timeout) is a hard maximum duration of the whole exchange, queueing
  included;
* ``response_start`` bounds the time until the response head is written (0 disables it);
* ``idle`` bounds the gap between writes, the first gap measured from the start (0 disables).

When one fires before the response started, the client gets ``504`` with the policy's message
(``request timeout`` / ``activator request timeout``); after it started, the response is cut
(the connection closes without completing it). Either way the exchange is then cancelled,
which releases breaker slots and closes the upstream connection through its owner's cleanup.

Why a shared ``Deadline`` and a sweeper, not a timer per request: on uvloop each
``loop.call_at`` is a libuv handle allocated, started, stopped and closed per request, and
even a small Python object per request measured about 2 % of the queue-proxy's instructions
(``python -m bench.instructions``). A component holds one ``Deadline`` per set of timeouts
(the queue-proxy one, the activator one per revision); a request costs one set insert
(``watch``) and one delete (``forget``), and every field the check needs is already on the
exchange. One periodic task per event loop walks the watched exchanges every
``SWEEP_INTERVAL`` and stops when none is left. Timeouts fire up to ``SWEEP_INTERVAL`` late,
far inside the ±1 s the reliability catalogue asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from proxy.errors import GatewayTimeout
from proxy.exchange import Exchange

__all__ = ["SWEEP_INTERVAL", "Deadline", "grpc_timeout"]

#: How often watched exchanges are checked (seconds).
SWEEP_INTERVAL = 0.1


class Deadline:
    """One set of timeouts (seconds; 0 disables one), applied to each exchange ``watch``ed
    until it is ``forget``-ed. Shared by all the requests it applies to, on one event loop."""

    __slots__ = (
        "_listed",
        "_narrowed",
        "_sweeper",
        "armed",
        "idle",
        "live",
        "message",
        "response_start",
        "total",
    )

    def __init__(
        self,
        total: float,
        response_start: float = 0.0,
        idle: float = 0.0,
        message: str = "request timeout",
    ) -> None:
        self.total = max(total, 0.0)
        self.response_start = max(response_start, 0.0)
        self.idle = max(idle, 0.0)
        self.message = message
        #: Whether any timeout is set; a policy with none watches nothing.
        self.armed = bool(self.total or self.response_start or self.idle)
        #: The exchanges under this policy now.
        self.live: set[Exchange] = set()
        self._sweeper: _Sweeper | None = None
        self._listed = False  # whether the sweeper knows this policy
        #: Policies with a shorter total, by milliseconds (``for_grpc``).
        self._narrowed: dict[int, Deadline] = {}

    def __repr__(self) -> str:
        return (
            f"Deadline(total={self.total}, response_start={self.response_start}, "
            f"idle={self.idle}, live={len(self.live)})"
        )

    def watch(self, ex: Exchange) -> None:
        """Apply the timeouts to ``ex`` from ``ex.started_at`` on, until ``forget(ex)``."""
        if self.armed:
            self.live.add(ex)
            if not self._listed:
                self._enlist(ex.conn.ctx.loop)

    def for_grpc(self, value: bytes) -> Deadline:
        """The policy for a request carrying ``grpc-timeout: value``: the same, with its
        total cut to the call's deadline when that is sooner (the revision timeout still
        bounds it). A malformed value is ignored, as gRPC servers ignore it. One policy per
        distinct deadline (at most ``_MAX_NARROWED``, then the revision's own); exchanges
        left on it are dropped by the sweeper once answered."""
        seconds = grpc_timeout(value)
        if seconds is None or (self.total and seconds >= self.total):
            return self
        key = max(1, int(seconds * 1000))
        policy = self._narrowed.get(key)
        if policy is None:
            if len(self._narrowed) >= _MAX_NARROWED:
                return self
            policy = self._narrowed[key] = Deadline(
                key / 1000, self.response_start, self.idle, self.message
            )
        return policy

    def forget(self, ex: Exchange) -> None:
        """Stop watching ``ex`` (its exchange is over); harmless if it was never watched."""
        self.live.discard(ex)

    def _enlist(self, loop: asyncio.AbstractEventLoop) -> None:
        sweeper = self._sweeper
        if sweeper is None or sweeper.loop is not loop:
            sweeper = self._sweeper = _sweeper(loop)
        self._listed = True
        sweeper.policies.add(self)
        if not sweeper.running:
            sweeper.start()

    def delisted(self) -> None:
        """The sweeper dropped this policy (nothing to watch); ``watch`` lists it again."""
        self._listed = False

    def expired(self, ex: Exchange, now: float) -> bool:
        """Whether one of the timeouts has run out for ``ex`` at ``now``."""
        started = ex.started_at
        if self.total and now - started >= self.total:
            return True
        if self.response_start and not ex.response_started and now - started >= self.response_start:
            return True
        if self.idle:
            return now - max(ex.last_write, started) >= self.idle
        return False

    def check(self, ex: Exchange, now: float) -> None:
        """Expire ``ex`` if a timeout is due: 504 before the response started, a cut after;
        then its owner is stopped through ``Exchange.cancel``."""
        if ex.response_done:
            self.live.discard(ex)
            return
        if not self.expired(ex, now):
            return
        self.live.discard(ex)
        if ex.response_started:
            ex.abort()
        else:
            ex.fail(GatewayTimeout(self.message))
        ex.cancel()


_MAX_NARROWED = 256
_GRPC_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def grpc_timeout(value: bytes) -> float | None:
    """Seconds of a ``grpc-timeout`` header (gRPC over HTTP/2: 1 to 8 digits and a unit, H M S
    m u n), or None when it is not one."""
    value = value.strip()
    digits, unit = value[:-1], value[-1:]
    scale = _GRPC_UNITS.get(unit)
    if scale is None or not 0 < len(digits) <= 8 or not digits.isdigit():
        return None
    return int(digits) * scale


class _Sweeper:
    """The policies of one event loop that watch exchanges, and the task that checks them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.policies: set[Deadline] = set()
        self.task: asyncio.Task[None] | None = None
        self.running = False

    def start(self) -> None:
        self.running = True
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            with contextlib.suppress(asyncio.CancelledError):
                while self.policies:
                    await asyncio.sleep(SWEEP_INTERVAL)
                    now = self.loop.time()
                    for policy in list(self.policies):
                        if not policy.live:
                            # Idle policies leave; ``watch`` lists them again when needed.
                            self.policies.discard(policy)
                            policy.delisted()
                            continue
                        for ex in list(policy.live):
                            policy.check(ex, now)
        finally:
            self.running = False
            for policy in self.policies:
                policy.delisted()
            self.policies.clear()


_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sweeper = _SWEEPERS.get(loop)
    if sweeper is None:
        sweeper = _SWEEPERS[loop] = _Sweeper(loop)
    return sweeper
