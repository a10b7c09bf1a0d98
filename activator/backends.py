"""Learning which pods of a revision may take traffic: probe before use (reference §2.6).

A pod (a queue-proxy ``host:port``) listed by the source is *unproven* until it answers
``GET /healthz`` with ``K-Network-Probe: queue`` and ``User-Agent: Knative-Activator-Probe`` by
``200`` and the body ``queue`` exactly. Then it is *healthy* and stays so while the source
lists it. One ``RevisionWatcher`` per revision probes all its unproven pods in parallel under
one deadline (300 ms), round after round every 200 ms while any is unproven, with no backoff.

Watchers never touch the throttler: each change of a revision's healthy set is emitted as a
frozen ``BackendsUpdate`` through ``emit`` (the throttler's update queue), so the throttler
keeps a single writer. A watcher emits only when its healthy set changes; a revision whose
pods all vanished emits the empty set, which closes its throttler's gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from proxy.prober import ProbeError, probe_http

__all__ = [
    "PROBE_HEADERS",
    "PROBE_INTERVAL",
    "PROBE_TIMEOUT",
    "Backends",
    "BackendsUpdate",
    "RevisionWatcher",
    "check_dests",
    "probe_queue",
    "split_dest",
]

log = logging.getLogger("sluice.activator.backends")

#: Seconds between probe rounds while some pod is unproven (Knative ``PROBE_FREQUENCY``).
PROBE_INTERVAL = 0.2
#: Deadline of one probe round (Knative ``PROBE_TIMEOUT``).
PROBE_TIMEOUT = 0.3
PROBE_HEADERS: tuple[tuple[str, str], ...] = (
    ("K-Network-Probe", "queue"),
    ("User-Agent", "Knative-Activator-Probe"),
)

Key = tuple[str, str]
Prober = Callable[[str, float], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class BackendsUpdate:
    """The healthy destinations of one revision (``key`` = (namespace, name)) right now."""

    key: Key
    dests: frozenset[str]


def split_dest(dest: str) -> tuple[str, int]:
    """``"10.0.0.1:8012"`` → ``("10.0.0.1", 8012)``; ``"[::1]:8012"`` → ``("::1", 8012)``."""
    host, _, port = dest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


async def probe_queue(dest: str, timeout: float) -> bool:
    """One activator probe of a queue-proxy; True iff it answered 200 ``queue``."""
    host, port = split_dest(dest)
    try:
        resp = await probe_http(host, port, "/healthz", PROBE_HEADERS, timeout)
    except ProbeError as exc:
        log.debug("probe of %s failed: %s", dest, exc)
        return False
    return resp.status == 200 and resp.body == b"queue"


def check_dests(
    endpoints: frozenset[str], healthy: frozenset[str], passed: Iterable[str]
) -> frozenset[str]:
    """The new healthy set: previously healthy pods still listed, plus those that passed."""
    return (healthy & endpoints) | (frozenset(passed) & endpoints)


class RevisionWatcher:
    """Probes one revision's pods and emits its healthy set on every change."""

    def __init__(
        self,
        key: Key,
        emit: Callable[[BackendsUpdate], None],
        probe: Prober = probe_queue,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.key = key
        self.endpoints: frozenset[str] = frozenset()
        self.healthy: frozenset[str] = frozenset()
        self._emit = emit
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        self._sent: frozenset[str] | None = None
        self._changed = asyncio.Event()

    def set_endpoints(self, endpoints: frozenset[str]) -> None:
        if endpoints != self.endpoints:
            self.endpoints = endpoints
            self._changed.set()

    async def _probe_round(self, dests: frozenset[str]) -> list[str]:
        async def one(dest: str) -> bool:
            try:
                return await self._probe(dest, self._timeout)
            except (OSError, ValueError) as exc:
                log.debug("probe of %s failed: %s", dest, exc)
                return False

        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(one(d)): d for d in sorted(dests)}
        try:
            # One deadline for the round; a probe still running then counts as failed.
            done, _ = await asyncio.wait(tasks, timeout=self._timeout)
        finally:
            for task in tasks:
                task.cancel()
        return sorted(tasks[t] for t in done if not t.cancelled() and t.result())

    def step(self, passed: Iterable[str]) -> None:
        """Fold one round's results in and emit if the healthy set changed."""
        self.healthy = check_dests(self.endpoints, self.healthy, passed)
        if self.healthy != self._sent and (self._sent is not None or self.healthy):
            self._sent = self.healthy
            self._emit(BackendsUpdate(self.key, self.healthy))

    async def run(self) -> None:
        while True:
            self._changed.clear()
            unproven = self.endpoints - self.healthy
            passed = await self._probe_round(unproven) if unproven else []
            self.step(passed)
            if self.endpoints - self.healthy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._changed.wait()
            else:
                await self._changed.wait()

    def __repr__(self) -> str:
        return (
            f"RevisionWatcher({self.key[0]}/{self.key[1]}, endpoints={len(self.endpoints)}, "
            f"healthy={len(self.healthy)})"
        )


class Backends:
    """One watcher task per revision, kept in line with the source's endpoint lists."""

    def __init__(
        self,
        emit: Callable[[BackendsUpdate], None],
        probe: Prober = probe_queue,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._emit = emit
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        self._watchers: dict[Key, tuple[RevisionWatcher, asyncio.Task[None]]] = {}

    def set_endpoints(self, endpoints: Mapping[Key, frozenset[str]]) -> None:
        """Start, update or stop watchers so that exactly ``endpoints``' revisions are watched."""
        for key in [k for k in self._watchers if k not in endpoints]:
            _, task = self._watchers.pop(key)
            task.cancel()
        loop = asyncio.get_running_loop()
        for key, eps in endpoints.items():
            entry = self._watchers.get(key)
            if entry is None:
                watcher = RevisionWatcher(
                    key, self._emit, self._probe, self._interval, self._timeout
                )
                watcher.endpoints = eps
                task = loop.create_task(watcher.run(), name=f"watch {key[0]}/{key[1]}")
                self._watchers[key] = (watcher, task)
            else:
                entry[0].set_endpoints(eps)

    def healthy(self, key: Key) -> frozenset[str]:
        entry = self._watchers.get(key)
        return entry[0].healthy if entry is not None else frozenset()

    async def close(self) -> None:
        tasks = [task for _, task in self._watchers.values()]
        self._watchers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __repr__(self) -> str:
        return f"Backends(revisions={len(self._watchers)})"
