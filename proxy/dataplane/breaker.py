"""Knative's breaker: a bounded admission queue in front of a resizable concurrency semaphore.

Theory of operation
-------------------
A ``Breaker`` has two counters, both mutated only by code running on the event loop thread
(there are no locks: every mutation is a synchronous step between two awaits).

* ``Breaker.in_flight`` counts *admitted* requests, waiting plus executing. It never exceeds
  ``queue_depth + max_concurrency``; an arrival that would exceed it fails at once with
  ``QueueFull``. It is changed by ``acquire`` (up, and down again if the wait is cancelled),
  ``release`` (down) and ``reserve`` and its callback.
* ``Semaphore._in_use`` counts execution slots held. It may exceed ``capacity`` only after the
  capacity was lowered: lowering never preempts holders, it just stops new grants.

Semaphore invariant, restored at the end of every synchronous step: *if a pending waiter
exists, then ``in_use >= capacity``.* Every step that frees room (``release``, raising the
capacity, a waiter leaving) calls ``_grant``, which hands free slots to waiters in arrival
order. A grant is a direct hand-off: the slot is counted as held by the waiter before it
resumes, so a newcomer cannot barge in between and waiters are served FIFO. Because of the
invariant, "is there room?" is just ``in_use < capacity``; the fast path allocates nothing.

A waiter cancelled while queued removes itself; one cancelled after it was granted a slot (but
before it resumed) gives the slot back, so cancellation never leaks a slot. Knative does not
promise FIFO order; Sluice provides it because it lowers tail latency.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from proxy.errors import QueueFull

__all__ = ["MAX_BREAKER_CAPACITY", "Breaker", "Semaphore", "Ticket"]

T = TypeVar("T")

#: Largest capacity a breaker accepts; Knative's limit, kept so capacity maths agree.
MAX_BREAKER_CAPACITY = 2**31 - 1


class Semaphore:
    """A counting semaphore whose capacity can change while slots are held.

    ``acquire`` waits for a slot, ``try_acquire`` never waits, ``release`` frees one slot.
    Waiters are granted slots in arrival order.
    """

    __slots__ = ("_capacity", "_in_use", "_waiters")

    def __init__(self, capacity: int) -> None:
        if capacity < 0 or capacity > MAX_BREAKER_CAPACITY:
            raise ValueError(f"semaphore capacity must be in [0, {MAX_BREAKER_CAPACITY}]")
        self._capacity = capacity
        self._in_use = 0
        # An ordered dict used as an ordered set: O(1) removal of a cancelled waiter and O(1)
        # pop of the oldest one, where a deque would need a linear remove.
        self._waiters: OrderedDict[asyncio.Future[None] | Ticket[Any], None] = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        """Slots currently held (granted waiters included)."""
        return self._in_use

    def try_acquire(self) -> bool:
        """Take a slot if one is free right now; never waits."""
        if self._in_use < self._capacity:
            self._in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting for one if none is free.

        If cancelled while waiting, no slot is held on return (CancelledError propagates).
        """
        if self._in_use < self._capacity:
            self._in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[fut] = None
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted a slot, then cancelled before resuming: hand the slot on.
                self.release()
            else:
                self._waiters.pop(fut, None)
                # Grants may have skipped this (already cancelled) future; re-check for room.
                self._grant()
            raise

    def release(self) -> None:
        """Free one slot, handing it to the oldest waiter if any.

        Raises RuntimeError if no slot is held: that is a caller bug, never load.
        """
        if self._in_use <= 0:
            raise RuntimeError("semaphore released more times than acquired")
        self._in_use -= 1
        if self._waiters:
            self._grant()

    def update_capacity(self, capacity: int) -> None:
        """Set the capacity. Raising it wakes up to the number of added slots that are free;
        lowering it never takes slots away from holders."""
        if capacity < 0 or capacity > MAX_BREAKER_CAPACITY:
            raise ValueError(f"semaphore capacity must be in [0, {MAX_BREAKER_CAPACITY}]")
        self._capacity = capacity
        if self._waiters:
            self._grant()

    def wait(self, waiter: Ticket[Any]) -> None:
        """Queue ``waiter`` for a slot (no slot is free): ``set_result`` is its grant."""
        self._waiters[waiter] = None

    def leave(self, waiter: Ticket[Any]) -> None:
        """``waiter`` gives up its place in the queue (it was not granted)."""
        self._waiters.pop(waiter, None)
        if self._waiters:
            self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters and self._in_use < self._capacity:
            fut, _ = waiters.popitem(last=False)
            if fut.done():
                continue  # cancelled; its owner has not run its cleanup yet
            self._in_use += 1
            fut.set_result(None)

    def __repr__(self) -> str:
        return (
            f"Semaphore(capacity={self._capacity}, in_use={self._in_use}, "
            f"waiters={len(self._waiters)})"
        )


#: Ticket states (module constants: read on every grant, cheaper than class attributes).
_WAITING, _GRANTED, _RUNNING, _CANCELLED = range(4)


class Ticket(Generic[T]):
    """A place in a breaker's queue held by a callback instead of a waiting task.

    States: waiting → granted (slot held, ``on_grant(arg)`` scheduled) → running (it ran). The
    semaphore treats it like a future: ``done()`` tells it to skip a cancelled ticket and
    ``set_result`` is the grant. ``cancel`` gives back exactly what the ticket holds; ``leave``
    is ``cancel`` then ``on_leave(arg)``, the shape of an exchange's canceller, so an owner
    makes no closure per queued request.
    """

    __slots__ = ("_breaker", "_on_leave", "arg", "on_grant", "state")

    WAITING, GRANTED, RUNNING, CANCELLED = _WAITING, _GRANTED, _RUNNING, _CANCELLED

    def __init__(
        self,
        breaker: Breaker,
        on_grant: Callable[[T], None],
        arg: T,
        on_leave: Callable[[T], None] | None = None,
    ) -> None:
        self._breaker = breaker
        self.on_grant = on_grant
        self._on_leave = on_leave
        self.arg = arg
        self.state = _WAITING

    def done(self) -> bool:
        return self.state != _WAITING

    def set_result(self, _: None) -> None:
        self.state = _GRANTED
        self._breaker.granted(self)

    def cancel(self) -> None:
        """Leave the queue: frees the admission slot, and the execution slot if granted.

        After the callback ran the caller owns the slots (it calls ``release``): no-op.
        """
        breaker = self._breaker
        if self.state == _WAITING:
            self.state = _CANCELLED
            breaker.leave(self)
        elif self.state == _GRANTED:
            self.state = _CANCELLED
            breaker.release()

    def leave(self) -> None:
        """``cancel``, then tell the owner through ``on_leave(arg)``."""
        self.cancel()
        if self._on_leave is not None:
            self._on_leave(self.arg)


class Breaker:
    """Admission queue plus concurrency limit, with Knative's ``Maybe``/``Reserve`` semantics.

    At most ``queue_depth + max_concurrency`` requests are admitted (waiting or executing); at
    most ``capacity`` of them execute. ``capacity`` starts at ``initial_capacity`` and follows
    ``update_concurrency``. Usage::

        await breaker.acquire()      # QueueFull at once if no admission slot
        try:
            ...                      # execute
        finally:
            breaker.release()
    """

    __slots__ = (
        "_call_soon",
        "_max_concurrency",
        "_ready",
        "_run_scheduled",
        "_slots",
        "_total_slots",
        "in_flight",
    )

    def __init__(self, queue_depth: int, max_concurrency: int, initial_capacity: int) -> None:
        if queue_depth <= 0:
            raise ValueError(f"queue_depth must be > 0, got {queue_depth}")
        if max_concurrency < 0:
            raise ValueError(f"max_concurrency must be >= 0, got {max_concurrency}")
        if initial_capacity < 0 or initial_capacity > max_concurrency:
            raise ValueError(
                f"initial_capacity must be in [0, max_concurrency={max_concurrency}], "
                f"got {initial_capacity}"
            )
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        #: Granted tickets whose callbacks have not run yet, in grant order.
        self._ready: list[Ticket[Any]] = []
        self._run_scheduled = False
        self._total_slots = queue_depth + max_concurrency
        self._max_concurrency = max_concurrency
        #: Admitted requests, waiting plus executing (read-only outside this module; a plain
        #: attribute because the request path reads it).
        self.in_flight = 0
        self._slots = Semaphore(initial_capacity)

    @property
    def capacity(self) -> int:
        """Current execution capacity."""
        return self._slots.capacity

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    async def acquire(self) -> None:
        """Take an admission slot, then wait for an execution slot.

        Raises ``QueueFull`` immediately when every admission slot is taken. If cancelled
        while waiting, the admission slot is freed at once and CancelledError propagates.
        On return the caller holds both slots and must call ``release`` exactly once.
        """
        if self.in_flight >= self._total_slots:
            raise QueueFull()
        self.in_flight += 1
        sem = self._slots
        if sem.try_acquire():
            return
        try:
            await sem.acquire()
        except BaseException:
            self.in_flight -= 1
            raise

    def release(self) -> None:
        """Free the execution slot, then the admission slot, of one ``acquire``."""
        self._slots.release()
        self.in_flight -= 1

    def take(
        self,
        on_grant: Callable[[T], None],
        arg: T,
        on_leave: Callable[[T], None] | None = None,
    ) -> Ticket[T] | None:
        """``try_acquire``, else ``enqueue``, in one call for the request path.

        Returns None when both slots are held now (call ``release`` once, as after
        ``acquire``), else the ticket of a place in the queue (``on_grant(arg)`` runs from
        the event loop once the execution slot is held). Raises ``QueueFull`` when there
        is neither.
        """
        if self.in_flight >= self._total_slots:
            raise QueueFull()
        self.in_flight += 1
        sem = self._slots
        if sem.try_acquire():
            return None
        ticket = Ticket(self, on_grant, arg, on_leave)
        sem.wait(ticket)
        return ticket

    def enqueue(
        self,
        on_grant: Callable[[T], None],
        arg: T,
        on_leave: Callable[[T], None] | None = None,
    ) -> Ticket[T]:
        """Take an admission slot and queue for an execution slot without a task.

        ``on_grant(arg)`` runs from the event loop (never inside this call or inside
        ``release``) once the execution slot is held, at once if one is free; from then on
        the caller holds both slots and calls ``release`` once, as after ``acquire``.
        ``Ticket.cancel`` (or ``leave``, which then calls ``on_leave(arg)``) leaves the
        queue. Raises ``QueueFull`` like ``acquire``.
        """
        ticket = self.take(on_grant, arg, on_leave)
        if ticket is None:
            ticket = Ticket(self, on_grant, arg, on_leave)
            ticket.set_result(None)  # the slot is held: hand it over from the loop
        return ticket

    def leave(self, ticket: Ticket[Any]) -> None:
        """A waiting ``ticket`` leaves the queue: its admission slot is freed (``Ticket``)."""
        self._slots.leave(ticket)
        self.in_flight -= 1

    def granted(self, ticket: Ticket[Any]) -> None:
        """A ticket got its slot: run its callback from the loop, with the others granted
        in the same loop iteration, so that one scheduled call serves a batch of them."""
        self._ready.append(ticket)
        if not self._run_scheduled:
            self._run_scheduled = True
            call_soon = self._call_soon
            if call_soon is None:
                # Looked up once: ``get_running_loop()`` costs a getpid() syscall per call.
                call_soon = self._call_soon = asyncio.get_running_loop().call_soon
            call_soon(self._run_ready)

    def _run_ready(self) -> None:
        self._run_scheduled = False
        ready, self._ready = self._ready, []
        for i, ticket in enumerate(ready):
            if ticket.state != _GRANTED:
                continue  # cancelled after its grant; the slot went back at once
            ticket.state = _RUNNING
            try:
                ticket.on_grant(ticket.arg)
            except BaseException:
                # A callback failed: the later tickets still run, in a fresh call.
                self._ready[:0] = ready[i + 1 :]
                if self._ready and not self._run_scheduled:
                    self._run_scheduled = True
                    assert self._call_soon is not None
                    self._call_soon(self._run_ready)
                raise

    def try_acquire(self) -> bool:
        """``acquire`` without waiting: both slots now (True, release once), or nothing."""
        if self.in_flight >= self._total_slots or not self._slots.try_acquire():
            return False
        self.in_flight += 1
        return True

    def reserve(self) -> Callable[[], None] | None:
        """Take an admission and an execution slot without waiting.

        Returns a release callback (calling it more than once has no further effect), or
        None when either slot is unavailable, in which case nothing is held.
        """
        if self.in_flight >= self._total_slots or not self._slots.try_acquire():
            return None
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.release()

        return release

    def update_concurrency(self, n: int) -> None:
        """Set the execution capacity; see ``Semaphore.update_capacity``."""
        self._slots.update_capacity(n)

    def __repr__(self) -> str:
        return (
            f"Breaker(in_flight={self.in_flight}, total_slots={self._total_slots}, "
            f"capacity={self._slots.capacity}, executing={self._slots.in_use})"
        )
