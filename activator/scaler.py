"""Where the activator's concurrency figures go: pluggable scalers (reference §2.9).

A ``Scaler`` takes batches of ``(namespace, revision, Stat)``: ``poke`` for the immediate
scale-from-zero signal, ``report`` for the once-a-second figures. Both are called on the
request path or the reporting task and must never block or raise: a scaler that cannot keep
up drops batches and counts the drop.

* ``NullScaler`` drops everything (standalone use with fixed pods).
* ``WebhookScaler(url)`` POSTs one JSON object per revision entry,
  ``{"namespace", "revision", "concurrency", "requests", "poke"}``, from one sender task fed
  by a bounded queue. Each POST has a short timeout; failures are logged (rate-limited by
  the queue) and dropped, never retried.

A Knative websocket scaler and the embedded KPA plug into the same protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aiohttp

from activator.stats import StatBatch

__all__ = ["QUEUE_SIZE", "NullScaler", "Scaler", "WebhookScaler", "webhook_payloads"]

log = logging.getLogger("sluice.activator.scaler")

#: Pending POSTs kept before new ones are dropped (Knative spawns a goroutine per batch
#: instead, which is unbounded when the autoscaler hangs: catalogue H9).
QUEUE_SIZE = 1000
#: Seconds one POST may take, connection included.
POST_TIMEOUT = 2.0


class Scaler(Protocol):
    def poke(self, batch: StatBatch) -> None:
        """Send the scale-from-zero signal now; never blocks or raises."""
        ...

    def report(self, batch: StatBatch) -> None:
        """Send a periodic report; never blocks or raises."""
        ...


class NullScaler:
    """A scaler that goes nowhere."""

    def poke(self, batch: StatBatch) -> None:
        pass

    def report(self, batch: StatBatch) -> None:
        pass

    def __repr__(self) -> str:
        return "NullScaler()"


def webhook_payloads(batch: StatBatch, poke: bool) -> list[dict[str, Any]]:
    """The JSON objects POSTed for ``batch``, one per revision entry."""
    return [
        {
            "namespace": ns,
            "revision": name,
            "concurrency": stat.average_concurrent_requests,
            "requests": stat.request_count,
            "poke": poke,
        }
        for ns, name, stat in batch
    ]


class WebhookScaler:
    """POSTs figures as JSON to ``url`` from a single sender task.

    ``dropped`` counts payloads lost because the queue was full or the POST failed; it is
    exported as a metric. ``start`` must be called on the running loop; ``close`` stops the
    sender (pending payloads are dropped).
    """

    def __init__(
        self,
        url: str | None,
        queue_size: int = QUEUE_SIZE,
        timeout: float = POST_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        #: Target URL; None drops everything (the source may set or change it at run time).
        self.url = url
        self.timeout = timeout
        self.dropped = 0
        self.sent = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._session = session
        self._own_session = session is None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send_loop())

    def poke(self, batch: StatBatch) -> None:
        self._enqueue(batch, True)

    def report(self, batch: StatBatch) -> None:
        self._enqueue(batch, False)

    def _enqueue(self, batch: StatBatch, poke: bool) -> None:
        if self.url is None:
            return
        for payload in webhook_payloads(batch, poke):
            try:
                self._queue.put_nowait(payload)
            except asyncio.QueueFull:
                self.dropped += 1

    async def _send_loop(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        session = self._session
        while True:
            payload = await self._queue.get()
            url = self.url
            if url is None:
                continue
            try:
                async with session.post(url, json=payload) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, (), status=resp.status, message=resp.reason or ""
                        )
                self.sent += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.dropped += 1
                log.warning("scaler POST to %s failed: %s", url, exc or type(exc).__name__)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return (
            f"WebhookScaler({self.url!r}, queued={self._queue.qsize()}, sent={self.sent}, "
            f"dropped={self.dropped})"
        )
