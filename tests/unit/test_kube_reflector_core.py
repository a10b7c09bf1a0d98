"""The reflector's decisions against a scripted ListWatcher: no sockets, no real sleeps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pytest

from activator.kube.client import ENDPOINTS, ApiError, Expired, Resource, TransportError
from activator.kube.reflector import Backoff, Deleted, Reflector, Upserted

pytestmark = pytest.mark.timeout(10)


@dataclass(frozen=True, slots=True)
class Named:
    name: str
    value: str


def decode(obj: Mapping[str, Any]) -> Named | None:
    value = obj.get("value")
    if value == "ignore-me":
        return None  # "not ours"
    if not isinstance(value, str):
        raise ValueError(f"value: expected a string, got {value!r}")
    return Named(obj["metadata"]["name"], value)


def obj(name: str, value: object, rv: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)},
        "value": value,
    }


Step = list[tuple[str, dict[str, Any]]] | BaseException


class Script:
    """Lists and watches answered from queues; an empty watch queue means "wait forever"."""

    def __init__(self) -> None:
        self.lists: list[tuple[list[dict[str, Any]], str] | BaseException] = []
        self.watches: list[Step] = []
        self.watch_versions: list[str] = []
        self.list_calls = 0
        self.idle = asyncio.Event()

    async def list(
        self, resource: Resource, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self.list_calls += 1
        answer = self.lists.pop(0) if self.lists else ([], "1")
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def watch(
        self,
        resource: Resource,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> Stream:
        self.watch_versions.append(resource_version)
        return Stream(self)


class Stream:
    def __init__(self, script: Script) -> None:
        self._script = script
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._quiet = False

    async def open(self) -> None:
        if not self._script.watches:
            self._events = []
            self._quiet = True  # a watch that stays open with nothing to say
            return
        step = self._script.watches.pop(0)
        if isinstance(step, BaseException):
            raise step
        self._events = list(step)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for event in self._events:
            yield event
        if self._quiet:
            self._script.idle.set()
            await asyncio.Event().wait()  # the test cancels the reflector here


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def run_until_idle(
    script: Script, **kwargs: Any
) -> tuple[Reflector[Named], list[Upserted[Named] | Deleted[Named]], Sleeps]:
    events: list[Upserted[Named] | Deleted[Named]] = []
    sleeps = Sleeps()
    reflector: Reflector[Named] = Reflector(
        script,
        ENDPOINTS,
        decode,
        events.append,
        backoff=Backoff(initial=1.0, maximum=8.0, jitter=0.0),
        rng=random.Random(3),
        sleep=sleeps,
        **kwargs,
    )
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(script.idle.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return reflector, events, sleeps


def summary(events: list[Upserted[Named] | Deleted[Named]]) -> list[tuple[str, str]]:
    return [(type(e).__name__, e.key[1]) for e in events]


async def test_decode_none_means_not_ours_and_removes_a_stored_object() -> None:
    script = Script()
    script.lists.append(([obj("a", "1")], "5"))
    script.watches.append(
        [("MODIFIED", obj("a", "ignore-me", 6)), ("ADDED", obj("b", "ignore-me", 7))]
    )
    reflector, events, _ = await run_until_idle(script)
    assert summary(events) == [("Upserted", "a"), ("Deleted", "a")]
    assert events[1].obj == Named("a", "1")
    assert reflector.store == {}
    assert reflector.resource_version == "7"


async def test_bad_update_keeps_the_last_good_projection() -> None:
    script = Script()
    script.lists.append(([obj("a", "1")], "5"))
    script.watches.append([("MODIFIED", obj("a", 42, 6)), ("DELETED", obj("unknown", "x", 7))])
    reflector, events, _ = await run_until_idle(script)
    assert summary(events) == [("Upserted", "a")]
    assert reflector.store == {("ns", "a"): Named("a", "1")}


async def test_failures_back_off_exponentially_and_success_resets() -> None:
    script = Script()
    script.lists += [TransportError("down"), TransportError("down"), TransportError("down")]
    script.watches += [ApiError(500, "InternalError", "boom", "watch", "x")]
    reflector, _, sleeps = await run_until_idle(script)
    # Three failed lists (1, 2, 4 s), a good list, a failed watch (reset: 1 s), then quiet.
    assert sleeps.delays == [1.0, 2.0, 4.0, 1.0]
    assert reflector.synced.is_set() and reflector.healthy
    assert script.list_calls == 4


async def test_expired_watch_relists_at_once_but_an_expired_list_backs_off() -> None:
    script = Script()
    script.lists += [([], "5"), Expired(410, "Expired", "too old", "list", "x"), ([], "9")]
    script.watches += [Expired(410, "Expired", "too old", "watch", "x")]
    reflector, _, sleeps = await run_until_idle(script)
    assert sleeps.delays == [1.0]  # only for the expired list
    assert script.list_calls == 3
    assert script.watch_versions == ["5", "9"]
    assert reflector.resource_version == "9"


async def test_watch_closing_at_once_without_events_is_throttled() -> None:
    script = Script()
    script.watches += [[], [], [("BOOKMARK", {"metadata": {"resourceVersion": "12"}})]]
    reflector, _, sleeps = await run_until_idle(script, min_watch_seconds=60.0)
    assert sleeps.delays == [1.0, 1.0]  # the bookmark round counts as progress
    assert script.watch_versions == ["1", "1", "1", "12"]
    assert reflector.resource_version == "12"


class TimeoutRecorder(Script):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[int | None] = []

    def watch(
        self,
        resource: Resource,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> Stream:
        self.timeouts.append(timeout_seconds)
        return super().watch(resource, resource_version, label_selector, timeout_seconds)


async def test_watch_timeout_is_drawn_in_the_configured_range() -> None:
    script = TimeoutRecorder()
    script.watches += [[], [], []]
    await run_until_idle(script, min_watch_seconds=0.0)
    assert len(script.timeouts) == 4
    assert all(t is not None and 300 <= t < 600 for t in script.timeouts)
    assert len(set(script.timeouts)) > 1  # drawn per watch, not fixed
