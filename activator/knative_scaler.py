"""The Knative scaler: stat batches to Knative's autoscaler over its websocket (§2.9).

Knative's activator keeps one durable websocket to ``ws://autoscaler.<SYSTEM_NAMESPACE>.svc.
<cluster-domain>:8080/`` (``knative.dev/pkg/websocket``) and sends every batch, poke or
report, as one binary frame of ``metrics.WireStatMessages``. This module does the same on
aiohttp, as a ``Scaler`` (see ``activator.scaler``).

Theory of operation:

* ``poke``/``report`` run on the request path and the reporting task. They never block or
  raise: while connected the batch (not yet encoded, so the call is O(1)) goes onto a bounded
  queue; if the socket is down or the queue is full it is dropped and ``dropped`` counts it.
  Knative logs one error per lost batch; here the log is one line per state change and then
  at most one per ``LOG_INTERVAL``, with the count.
* One sender task drains the queue, encodes and writes. A batch whose write fails, or that
  was still queued when the connection went down, is dropped and counted.
* One run task owns the connection: dial (handshake limited to 3 s), serve, reconnect. While
  connected it pings every ``pong_timeout / 3`` seconds and reads with a deadline of
  ``pong_timeout`` (10 s) that only pongs extend, as gorilla's read deadline does in Knative;
  a connection that misses it is closed and redialled. Incoming data frames are discarded
  (the autoscaler sends none); pings are answered.
* Reconnection: failed dials back off exponentially (100 ms * 1.3, jitter 0.5, base capped at
  ``Backoff.cap``). A connection the server closes with 1012 (service restart, sent by the
  autoscaler when it restarts) is redialled at once; any other loss waits one back-off step
  first. Knative redials every loss at once; the one step keeps a server that accepts and
  drops at once from turning the loop hot.
* ``connected`` follows the socket; ``on_state(connected)`` is called on every change (the
  activator's readiness follows it and answers ``NOT_CONNECTED`` while down). ``reachable``
  and ``errors`` are Knative v1.23's ``kn.activator.stats.conn.reachable`` gauge and
  ``kn.activator.stats.conn.errors`` counter (a connection lost, other than by ``close``).

Only the run task and ``close`` change the state; the event loop is the only thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from activator.kubeenv import cluster_domain
from activator.stats import StatBatch
from proxy.dataplane.autoscaler_stat_pb import encode_wire_stats

__all__ = [
    "AUTOSCALER_PORT",
    "NOT_CONNECTED",
    "Backoff",
    "ConnState",
    "KnativeScaler",
    "Timings",
    "autoscaler_url",
    "backoff_delay",
    "cluster_domain",
]

log = logging.getLogger("sluice.activator.knative_scaler")

#: Knative's readiness error while the socket is down (``ErrConnectionNotEstablished``).
NOT_CONNECTED = "connection has not yet been established"
#: The autoscaler Service's websocket port.
AUTOSCALER_PORT = 8080
#: Pending batches before new ones are dropped. Knative starts a goroutine per batch instead,
#: unbounded while a write hangs; one second's report is one batch, so this is generous.
QUEUE_SIZE = 1000
#: Close code the autoscaler sends when it restarts (RFC 6455 "Service Restart").
SERVICE_RESTART = 1012
#: Seconds between two log lines about the same trouble (dropped batches, failed dials).
LOG_INTERVAL = 10.0


class ConnState(enum.Enum):
    """Lifecycle of the scaler's connection; only the run task moves it."""

    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # dialling or backing off
    CONNECTED = "connected"
    CLOSED = "closed"  # close() was called; final


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off between dials: ``min(cap, initial * factor**n) * (1 + jitter * r)``.

    Knative uses 100 ms * 1.3 with jitter 0.5 for 20 steps and then starts over (the last
    step near 15 s). A steady cap is simpler and, at 5 s, keeps the activator unready for at
    most a few seconds after the autoscaler comes back.
    """

    initial: float = 0.1
    factor: float = 1.3
    jitter: float = 0.5
    cap: float = 5.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cap < self.initial:
            raise ValueError(f"Backoff: need 0 < initial <= cap, got {self.initial}, {self.cap}")
        if self.factor < 1 or self.jitter < 0:
            raise ValueError(
                f"Backoff: need factor >= 1, jitter >= 0, got {self.factor}, {self.jitter}"
            )


def backoff_delay(backoff: Backoff, attempt: int, rand: float) -> float:
    """Seconds to wait before dial number ``attempt`` (0-based) of a series; ``rand`` in [0, 1)."""
    # Cap the exponent too: 1.3**n overflows a float long before anyone waits that long.
    base = min(backoff.cap, backoff.initial * backoff.factor ** min(attempt, 200))
    return base * (1.0 + backoff.jitter * rand)


@dataclass(frozen=True, slots=True)
class Timings:
    """The connection's clocks, Knative's by default; tests shrink them."""

    #: Seconds for TCP connect plus the HTTP upgrade (gorilla's ``HandshakeTimeout``).
    handshake_timeout: float = 3.0
    #: Read deadline, extended by each pong (``pongTimeout``).
    pong_timeout: float = 10.0
    #: Seconds between pings; Knative pings three times per ``pong_timeout``.
    ping_interval: float = 10.0 / 3
    #: Seconds ``close`` waits for the server's close frame.
    close_timeout: float = 1.0
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "pong_timeout", "ping_interval", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Timings.{name}: must be > 0, got {getattr(self, name)}")


def autoscaler_url(system_namespace: str, cluster_domain: str) -> str:
    """The in-cluster address of Knative's autoscaler websocket."""
    if not system_namespace:
        raise ValueError("system_namespace: must not be empty")
    domain = cluster_domain.strip(".") or "cluster.local"
    return f"ws://autoscaler.{system_namespace}.svc.{domain}:{AUTOSCALER_PORT}/"


class KnativeScaler:
    """A ``Scaler`` that writes ``WireStatMessages`` frames to Knative's autoscaler.

    ``start`` must be called on the running loop; ``close`` stops every task and the socket
    and is idempotent. ``session`` defaults to one owned (and closed) by the scaler;
    ``clock`` (monotonic seconds) and ``rand`` (uniform in [0, 1)) are injectable for tests.
    ``on_state`` must not raise; if it does the error is logged.
    """

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = QUEUE_SIZE,
        timings: Timings = Timings(),
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1, got {queue_size}")
        self.url = url
        self.timings = timings
        self.on_state = on_state
        #: Batches lost: queue full, not connected, or the write failed.
        self.dropped = 0
        #: Frames written.
        self.sent = 0
        #: Connections established after the first one.
        self.reconnects = 0
        #: Established connections lost other than by ``close``.
        self.errors = 0
        self._state = ConnState.IDLE
        self._queue: asyncio.Queue[StatBatch] = asyncio.Queue(queue_size)
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._rand = rand
        self._ws: aiohttp.ClientWebSocketResponse[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._established = 0
        # Rate limit of the "dropped" log: None logs the next drop at once.
        self._drop_logged_at: float | None = None
        self._drops_unlogged = 0

    # -- the Scaler protocol (request path: O(1), never blocks or raises) ------------------

    def poke(self, batch: StatBatch) -> None:
        self._enqueue(batch)

    def report(self, batch: StatBatch) -> None:
        self._enqueue(batch)

    def _enqueue(self, batch: StatBatch) -> None:
        if self.state is not ConnState.CONNECTED:
            self._drop(1, NOT_CONNECTED)
            return
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            self._drop(1, "send queue full")

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._drops_unlogged += count
        now = self._clock()
        last = self._drop_logged_at
        if last is None or now - last >= LOG_INTERVAL:
            log.error(
                "stats for the autoscaler dropped (%d batch(es) since the last line): %s",
                self._drops_unlogged,
                reason,
            )
            self._drop_logged_at = now
            self._drops_unlogged = 0

    # -- observed state ---------------------------------------------------------------------

    @property
    def state(self) -> ConnState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is ConnState.CONNECTED

    @property
    def reachable(self) -> int:
        """1 while connected, else 0 (``kn.activator.stats.conn.reachable``)."""
        return 1 if self.state is ConnState.CONNECTED else 0

    def _set_state(self, state: ConnState) -> None:
        was = self.connected
        self._state = state
        if self.connected == was:
            return
        self._drop_logged_at = None  # the next drop in the new state is logged at once
        if self.on_state is not None:
            try:
                self.on_state(self.connected)
            except Exception:
                log.exception("on_state callback failed")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the connection and sender tasks (once)."""
        if self._state is not ConnState.IDLE:
            return
        self._state = ConnState.CONNECTING
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="knative-scaler-conn"),
            loop.create_task(self._send_loop(), name="knative-scaler-send"),
        ]

    async def close(self) -> None:
        """Stop the tasks, close the socket and the owned session; queued batches are lost."""
        if self.state is ConnState.CLOSED:
            return
        self._set_state(ConnState.CLOSED)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the run task -----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.timings.backoff
        attempt = 0  # dials since the last connection (or the start)
        wait = False
        failed_logged_at: float | None = None
        while True:
            if wait:
                await asyncio.sleep(backoff_delay(backoff, attempt, self._rand()))
            wait = True
            attempt += 1
            try:
                ws = await self._dial()
            except Exception as exc:  # never let the loop die: the activator would stay unready
                # Knative logs every failed dial, which floods while the autoscaler is away;
                # the failing readiness says as much. One line per series, then per interval.
                now = self._clock()
                if failed_logged_at is None or now - failed_logged_at >= LOG_INTERVAL:
                    failed_logged_at = now
                    log.warning(
                        "autoscaler %s: cannot connect (attempt %d), retrying: %s",
                        self.url,
                        attempt,
                        _why(exc),
                    )
                continue
            attempt = 0
            failed_logged_at = None
            self._ws = ws
            if self._established:
                self.reconnects += 1
            self._established += 1
            log.info("autoscaler %s: connected", self.url)
            self._set_state(ConnState.CONNECTED)
            try:
                reason = await self._serve(ws)
            except Exception as exc:
                log.exception("autoscaler %s: connection failed unexpectedly", self.url)
                reason = f"unexpected error: {_why(exc)}"
            finally:
                self._ws = None
                if self.state is not ConnState.CLOSED:
                    self._set_state(ConnState.CONNECTING)
                await ws.close()
            self.errors += 1
            self._drop_queued()
            log.warning("autoscaler %s: connection lost (%s), reconnecting", self.url, reason)
            if ws.close_code == SERVICE_RESTART:
                wait = False  # the autoscaler restarts: its successor is dialled at once

    async def _dial(self) -> aiohttp.ClientWebSocketResponse[Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with asyncio.timeout(self.timings.handshake_timeout):
            return await self._session.ws_connect(
                self.url,
                autoping=False,  # pongs must be seen: they extend the read deadline
                autoclose=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=self.timings.close_timeout),
            )

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> str:
        """Read until the connection ends; returns why. Pings go out from a helper task."""
        pinger = asyncio.get_running_loop().create_task(
            self._ping_loop(ws), name="knative-scaler-ping"
        )
        pong_timeout = self.timings.pong_timeout
        deadline = self._clock() + pong_timeout
        try:
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return f"no pong for {pong_timeout:g}s"
                try:
                    msg = await ws.receive(timeout=remaining)
                except TimeoutError:
                    return f"no pong for {pong_timeout:g}s"
                kind = msg.type
                if kind is aiohttp.WSMsgType.PONG:
                    deadline = self._clock() + pong_timeout
                elif kind is aiohttp.WSMsgType.PING:
                    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                        await ws.pong(msg.data)
                elif kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                    return f"closed by the server with code {ws.close_code}"
                elif kind is aiohttp.WSMsgType.CLOSED:
                    return f"connection closed (code {ws.close_code})"
                elif kind is aiohttp.WSMsgType.ERROR:
                    return f"error: {_why(ws.exception() or msg.data)}"
                # TEXT and BINARY frames are discarded: the autoscaler sends none.
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _ping_loop(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
        while True:
            await asyncio.sleep(self.timings.ping_interval)
            try:
                await ws.ping()
            except (ConnectionError, aiohttp.ClientError) as exc:
                # The reader notices a dead socket; a failed ping alone is only noted.
                log.debug("autoscaler %s: ping failed: %s", self.url, _why(exc))

    def _drop_queued(self) -> None:
        lost = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            lost += 1
        if lost:
            self._drop(lost, "connection lost")

    # -- the sender task --------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            batch = await self._queue.get()
            ws = self._ws
            if ws is None or ws.closed:
                self._drop(1, NOT_CONNECTED)
                continue
            try:
                data = encode_wire_stats(batch)
            except Exception as exc:  # a malformed batch must not stop the sender
                self._drop(1, f"cannot encode: {_why(exc)}")
                continue
            try:
                await ws.send_bytes(data)
            except Exception as exc:  # reset, closing transport: the run task sees it too
                self._drop(1, _why(exc))
                continue
            self.sent += 1

    def __repr__(self) -> str:
        return (
            f"KnativeScaler({self.url!r}, state={self.state.value}, "
            f"queued={self._queue.qsize()}, sent={self.sent}, dropped={self.dropped}, "
            f"reconnects={self.reconnects}, errors={self.errors})"
        )


def _why(exc: object) -> str:
    """A one-line reason for logs: the message, or the type when there is none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
