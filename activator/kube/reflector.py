"""List-then-watch one resource into a store of projections, client-go's reflector in small.

Theory of operation. ``run()`` is the only writer of the store. It lists (paged), replaces the
store, sets ``synced``, then watches from the list's resourceVersion. Every event and bookmark
advances the resourceVersion; a watch the server ends normally (its ``timeoutSeconds``, drawn
at random in [300, 600) so many reflectors do not reconnect together) is resumed from there
with no relist. A 410 Gone (``Expired``) means the version was compacted away: list again and
reconcile, emitting a synthetic ``Deleted`` for every stored key the new list lacks and an
``Upserted`` only where the projection differs. Any other failure marks the reflector
unhealthy and retries after a jittered exponential back-off (0.8 s doubling to 30 s), which a
success resets. Failures are logged once per change of failure, not once per retry.

Objects are projected with ``decode``; the store keeps only projections. ``decode`` returning
None means "not ours" (treated as absent: a stored key is deleted). An object it rejects (any
exception) is skipped with one warning naming it and the reason, and the previous projection,
if any, stays in force. An equal projection emits nothing, so an update touching only status
costs nothing downstream. ``on_event`` is called synchronously and must not block.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Generic, Protocol, TypeVar

from activator.kube.client import Expired, Resource
from activator.kube.objects import Key, object_key

__all__ = ["Backoff", "Deleted", "Event", "EventStream", "ListWatcher", "Reflector", "Upserted"]

log = logging.getLogger("sluice.activator.kube")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upserted(Generic[T]):
    """``key`` now has projection ``obj`` (new, or changed from what was stored)."""

    key: Key
    obj: T


@dataclass(frozen=True, slots=True)
class Deleted(Generic[T]):
    """``key`` is gone (or no longer decodes to anything); ``obj`` is its last projection."""

    key: Key
    obj: T


Event = Upserted[T] | Deleted[T]


class EventStream(Protocol):
    """One watch: ``open()`` sends it, iteration yields ``(type, object)`` until it ends."""

    async def open(self) -> None: ...

    async def __aenter__(self) -> EventStream: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...


class ListWatcher(Protocol):
    """The two verbs a reflector needs; ``KubeClient`` is one."""

    async def list(
        self, resource: Resource, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self,
        resource: Resource,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> EventStream: ...


class Backoff:
    """Exponential back-off with jitter: ``initial * factor**n`` capped at ``maximum``,
    each delay stretched by up to ``jitter`` of itself (client-go's wait.Backoff shape)."""

    __slots__ = ("_next", "factor", "initial", "jitter", "maximum", "rng")

    def __init__(
        self,
        initial: float = 0.8,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self.rng = rng or random.Random()
        self._next = initial

    def delay(self) -> float:
        """The next delay to wait; each call grows the following one."""
        base = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return min(self.maximum, base * (1.0 + self.jitter * self.rng.random()))

    def reset(self) -> None:
        self._next = self.initial


class Reflector(Generic[T]):
    """Mirror ``resource`` (filtered by ``label_selector``) as ``{key: decode(obj)}``."""

    def __init__(
        self,
        client: ListWatcher,
        resource: Resource,
        decode: Callable[[Mapping[str, Any]], T | None],
        on_event: Callable[[Upserted[T] | Deleted[T]], None],
        *,
        label_selector: str | None = None,
        backoff: Backoff | None = None,
        watch_timeout: tuple[int, int] = (300, 600),
        min_watch_seconds: float = 1.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.resource = resource
        self.label_selector = label_selector
        self.name = resource.describe() + (f" [{label_selector}]" if label_selector else "")
        self._client = client
        self._decode = decode
        self._on_event = on_event
        self._backoff = backoff or Backoff()
        self._watch_timeout = watch_timeout
        self._min_watch = min_watch_seconds
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._store: dict[Key, T] = {}
        self._rejected: dict[Key, str] = {}  # key -> reason already warned about
        self._failure: str | None = None
        self._healthy = False
        self.resource_version = ""
        #: Set once the first list has been applied.
        self.synced = asyncio.Event()

    @property
    def store(self) -> Mapping[Key, T]:
        """A read-only view of the current projections."""
        return MappingProxyType(self._store)

    @property
    def failure(self) -> str | None:
        """The last failure's one-line reason while failing (None when the last try worked)."""
        return self._failure

    @property
    def healthy(self) -> bool:
        """False until the first list, and while the API server cannot be listed/watched."""
        return self._healthy

    async def run(self) -> None:
        """List and watch until cancelled. Never raises anything but ``CancelledError``."""
        need_list = True
        loop = asyncio.get_running_loop()
        while True:
            try:
                if need_list:
                    items, rv = await self._client.list(self.resource, self.label_selector)
                    self._replace(items)
                    self.resource_version = rv
                    need_list = False
                    self._succeeded()
                    self.synced.set()
                low, high = self._watch_timeout
                timeout = self._rng.randrange(low, high) if high > low else low
                started, seen = loop.time(), 0
                async with self._client.watch(
                    self.resource, self.resource_version, self.label_selector, timeout
                ) as events:
                    await events.open()
                    self._succeeded()
                    async for kind, obj in events:
                        seen += 1
                        self._apply(kind, obj)
                # A normal end: resume from the last version. A server that closes at once
                # with nothing to say would make that a hot loop, so such a watch waits.
                if seen == 0 and loop.time() - started < self._min_watch:
                    await self._sleep(self._backoff.delay())
            except asyncio.CancelledError:
                raise
            except Expired as exc:
                if not need_list:
                    log.info("%s: %s; listing again", self.name, exc)
                    need_list = True
                else:  # the list itself expired: retrying at once could spin
                    self._failed(exc)
                    await self._sleep(self._backoff.delay())
            except Exception as exc:  # a reflector must outlive any failure
                self._failed(exc)
                await self._sleep(self._backoff.delay())

    # -- state changes ---------------------------------------------------------------------

    def _succeeded(self) -> None:
        if self._failure is not None:
            log.info("%s: API server reachable again", self.name)
        self._failure = None
        self._healthy = True
        self._backoff.reset()

    def _failed(self, exc: Exception) -> None:
        self._healthy = False
        line = str(exc) or type(exc).__name__
        if line != self._failure:
            log.warning("%s: %s; retrying with back-off", self.name, line)
        self._failure = line

    def _key(self, obj: Mapping[str, Any]) -> Key | None:
        try:
            return object_key(obj)
        except ValueError as exc:
            log.warning("%s: skipping an object: %s", self.name, exc)
            return None

    def _project(self, key: Key, obj: Mapping[str, Any]) -> tuple[bool, T | None]:
        """``(True, projection)``, or ``(False, None)`` after one warning if rejected."""
        try:
            projected = self._decode(obj)
        except Exception as exc:  # a bad object must not stop the stream
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if self._rejected.get(key) != reason:
                log.warning("%s: skipping %s/%s: %s", self.name, key[0], key[1], reason)
                self._rejected[key] = reason
            return False, None
        self._rejected.pop(key, None)
        return True, projected

    def _emit(self, event: Upserted[T] | Deleted[T]) -> None:
        try:
            self._on_event(event)
        except Exception:  # the consumer's bug must not kill the watch
            log.exception("%s: event handler failed on %s", self.name, event.key)

    def _put(self, key: Key, projected: T | None) -> None:
        old = self._store.get(key)
        if projected is None:
            if old is not None:
                del self._store[key]
                self._emit(Deleted(key, old))
        elif old != projected:
            self._store[key] = projected
            self._emit(Upserted(key, projected))

    def _remove(self, key: Key) -> None:
        self._rejected.pop(key, None)
        old = self._store.pop(key, None)
        if old is not None:
            self._emit(Deleted(key, old))

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("resourceVersion"), str):
            self.resource_version = meta["resourceVersion"]
        if kind in ("ADDED", "MODIFIED"):
            key = self._key(obj)
            if key is not None:
                ok, projected = self._project(key, obj)
                if ok:
                    self._put(key, projected)
        elif kind == "DELETED":
            key = self._key(obj)
            if key is not None:
                self._remove(key)
        elif kind != "BOOKMARK":
            log.warning("%s: skipping an event of unknown type %r", self.name, kind)

    def _replace(self, items: list[dict[str, Any]]) -> None:
        """Reconcile the store with a fresh list: synthetic deletes, then changed upserts.

        A listed object that fails to decode keeps its previous projection, as on a watch.
        """
        fresh: dict[Key, T | None] = {}
        listed: set[Key] = set()
        for obj in items:
            key = self._key(obj)
            if key is None:
                continue
            listed.add(key)
            ok, projected = self._project(key, obj)
            if ok:
                fresh[key] = projected
        for key in [k for k in self._store if k not in listed]:
            self._remove(key)
        for key in [k for k in self._rejected if k not in listed]:
            del self._rejected[key]
        for key, projected in fresh.items():
            self._put(key, projected)
