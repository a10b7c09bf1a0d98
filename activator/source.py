"""Where routes, revisions and endpoints come from: pluggable sources of ``RoutingConfig``.

A source is an async iterator of whole snapshots. The activator consumes the newest one and
never a diff, so a source may coalesce: a consumer that falls behind skips to the latest
snapshot rather than replaying every intermediate one. A source never yields an invalid
snapshot; a bad input is reported by the source and the last good snapshot stays in force.

* ``StaticFileSource`` watches a YAML file (``activator.static_yaml``): re-read when its mtime,
  size or inode change (polled every second) and when ``reload()`` is called (SIGHUP).
* ``PushSource`` is fed in-process with ``update(cfg)``; the embedded control plane uses it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from activator.model import IncrementalUpdate, RoutingConfig
from activator.static_yaml import ConfigError, load_config_file

__all__ = ["POLL_INTERVAL", "PushSource", "Source", "SourceHealth", "StaticFileSource"]

log = logging.getLogger("sluice.activator.source")

#: Seconds between two checks of the static file's mtime.
POLL_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """Whether a source is in step with its origin; ``error`` (one line) says why not."""

    error: str | None


class Source(Protocol):
    """A stream of validated routing state: ``RoutingConfig`` snapshots (each replaces the
    whole state), or incremental updates (``activator.model.IncrementalUpdate``) and
    ``SourceHealth`` values from sources that follow a cluster one object at a time."""

    def updates(self) -> AsyncIterator[RoutingConfig | IncrementalUpdate | SourceHealth]:
        """Yield the current state as soon as there is one, then every change."""
        ...


class _Latest:
    """A single-slot mailbox: ``put`` replaces the value, ``get`` waits for a new one."""

    __slots__ = ("_changed", "_value", "_version")

    def __init__(self) -> None:
        self._value: RoutingConfig | None = None
        self._version = 0
        self._changed = asyncio.Event()

    @property
    def version(self) -> int:
        """How many values were put."""
        return self._version

    def put(self, cfg: RoutingConfig) -> None:
        self._value = cfg
        self._version += 1
        self._changed.set()

    async def iterate(self) -> AsyncIterator[RoutingConfig]:
        seen = 0
        while True:
            while self._version == seen:
                self._changed.clear()
                await self._changed.wait()
            seen = self._version
            assert self._value is not None
            yield self._value


class PushSource:
    """A source fed by its owner: every ``update`` becomes the newest snapshot."""

    def __init__(self, initial: RoutingConfig | None = None) -> None:
        self._latest = _Latest()
        if initial is not None:
            self._latest.put(initial)

    def update(self, cfg: RoutingConfig) -> None:
        """Publish ``cfg`` (already validated by the caller). Never blocks."""
        self._latest.put(cfg)

    def snapshots(self) -> AsyncIterator[RoutingConfig]:
        return self._latest.iterate()

    def updates(self) -> AsyncIterator[RoutingConfig]:
        return self.snapshots()

    def __repr__(self) -> str:
        return f"PushSource(version={self._latest.version})"


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class StaticFileSource:
    """Snapshots of a YAML file, re-read when it changes or on ``reload()``.

    ``open`` reads the file once and raises ``ConfigError`` if it is invalid, so start-up can
    fail with one line. Later an invalid file is logged (one line) and ignored: the running
    configuration stays in force until the file is fixed.
    """

    def __init__(self, path: Path, initial: RoutingConfig, interval: float = POLL_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.current = initial
        self._stamp = _stamp(path)
        self._latest = _Latest()
        self._latest.put(initial)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: str | Path, interval: float = POLL_INTERVAL) -> StaticFileSource:
        """Load ``path`` now; raises ``ConfigError`` with a one-line message."""
        p = Path(path)
        return cls(p, load_config_file(p), interval)

    def reload(self) -> None:
        """Re-read the file at once, changed or not (SIGHUP)."""
        self._wake.set()

    def check(self, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); True if a new snapshot was published."""
        stamp = _stamp(self.path)
        if not force and stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            cfg = load_config_file(self.path)
        except ConfigError as exc:
            log.error("configuration refused, keeping the running one: %s", exc)
            return False
        if cfg == self.current:
            return False
        self.current = cfg
        self._latest.put(cfg)
        log.info("configuration reloaded from %s", self.path)
        return True

    async def _watch(self) -> None:
        while True:
            forced = False
            try:
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
                forced = True
            except TimeoutError:
                pass
            self._wake.clear()
            # Reading a small file blocks for microseconds; not worth a thread.
            self.check(force=forced)

    async def snapshots(self) -> AsyncIterator[RoutingConfig]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        try:
            async for cfg in self._latest.iterate():
                yield cfg
        finally:
            task, self._task = self._task, None
            if task is not None:
                task.cancel()

    def updates(self) -> AsyncIterator[RoutingConfig]:
        return self.snapshots()

    def __repr__(self) -> str:
        return f"StaticFileSource({str(self.path)!r}, interval={self.interval})"
