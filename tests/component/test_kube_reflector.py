"""The reflector (list, watch, resume, relist, back-off) against the fake API server."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from activator.kube.client import ENDPOINTS, KubeClient
from activator.kube.config import KubeConfig
from activator.kube.objects import EndpointsInfo, decode_endpoints
from activator.kube.reflector import Backoff, Deleted, Reflector, Upserted
from tests.component.kube_fake_api import IDENTITY, FakeApiServer

pytestmark = pytest.mark.timeout(20)

CORE = "api/v1"
LOGGER = "sluice.activator.kube"


def endpoints(name: str, *ips: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "subsets": [
            {"addresses": [{"ip": ip} for ip in ips], "ports": [{"name": "http", "port": 8012}]}
        ],
    }


class Recorder:
    """Collects reflector events; ``until`` awaits a condition over them."""

    def __init__(self) -> None:
        self.events: list[Upserted[EndpointsInfo] | Deleted[EndpointsInfo]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Upserted[EndpointsInfo] | Deleted[EndpointsInfo]) -> None:
        self.events.append(event)
        self._changed.set()

    def summary(self) -> list[tuple[str, str]]:
        return [(type(e).__name__, e.key[1]) for e in self.events]

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()


async def eventually(check: Callable[[], bool]) -> None:
    """Wait for a state that no event announces (health flags), polling briefly."""
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.005)


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(api: FakeApiServer) -> AsyncIterator[KubeClient]:
    c = KubeClient(KubeConfig(server=api.url), page_size=2)
    try:
        yield c
    finally:
        await c.close()


class Running:
    """A reflector running in a task for the duration of a test."""

    def __init__(self, client: KubeClient, **kwargs: Any) -> None:
        self.recorder = Recorder()
        self.reflector: Reflector[EndpointsInfo] = Reflector(
            client,
            ENDPOINTS,
            decode_endpoints,
            self.recorder,
            backoff=Backoff(initial=0.01, maximum=0.05, rng=random.Random(1)),
            rng=random.Random(1),
            **kwargs,
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.reflector.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def watches(api: FakeApiServer) -> list[dict[str, str]]:
    return [q for _, q in api.requests if q.get("watch") == "true"]


def lists(api: FakeApiServer) -> list[dict[str, str]]:
    return [q for _, q in api.requests if q.get("watch") != "true"]


async def test_first_list_fills_the_store_and_sets_synced(
    api: FakeApiServer, client: KubeClient
) -> None:
    for name in ("a", "b", "c"):
        await api.put(CORE, "endpoints", endpoints(name, "10.0.0.1"))
    async with Running(client) as run:
        await asyncio.wait_for(run.reflector.synced.wait(), 5)
        assert run.reflector.healthy
        assert run.recorder.summary() == [("Upserted", "a"), ("Upserted", "b"), ("Upserted", "c")]
        assert set(run.reflector.store) == {("default", "a"), ("default", "b"), ("default", "c")}
        assert len(lists(api)) == 2  # two pages of two


async def test_watch_applies_changes_and_skips_equal_projections(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(CORE, "endpoints", endpoints("a", "10.0.0.1"))
    async with Running(client, label_selector="app=x") as run:
        await asyncio.wait_for(run.reflector.synced.wait(), 5)
        await api.put(CORE, "endpoints", endpoints("b", "10.0.0.2", app="x"))
        # Only an annotation changes: same projection, no event.
        noop = endpoints("b", "10.0.0.2", app="x")
        noop["metadata"]["annotations"] = {"touched": "yes"}
        await api.put(CORE, "endpoints", noop)
        await api.put(CORE, "endpoints", endpoints("b", "10.0.0.2", "10.0.0.3", app="x"))
        await api.delete(CORE, "endpoints", "default", "b")
        await run.recorder.until(3)
        assert run.recorder.summary() == [
            ("Upserted", "b"),
            ("Upserted", "b"),
            ("Deleted", "b"),
        ]
        changed = run.recorder.events[1].obj
        assert changed.dests("http")[0] == frozenset({"10.0.0.2:8012", "10.0.0.3:8012"})
        assert run.reflector.store == {}
        assert run.reflector.resource_version == str(api.rv)
    assert watches(api)[0]["labelSelector"] == "app=x"


async def test_bookmark_advances_the_resource_version(
    api: FakeApiServer, client: KubeClient
) -> None:
    async with Running(client) as run:
        await asyncio.wait_for(run.reflector.synced.wait(), 5)
        await eventually(lambda: len(watches(api)) == 1)
        await api.bookmark()
        await eventually(lambda: run.reflector.resource_version == str(api.rv))
        assert run.recorder.events == []


async def test_watch_closed_by_server_resumes_from_the_last_version_without_relisting(
    api: FakeApiServer, client: KubeClient
) -> None:
    api.close_watches_after = 1
    async with Running(client) as run:
        await asyncio.wait_for(run.reflector.synced.wait(), 5)
        listed_at = run.reflector.resource_version
        await api.put(CORE, "endpoints", endpoints("a", "10.0.0.1"))
        await run.recorder.until(1)
        after_a = str(api.rv)
        await api.put(CORE, "endpoints", endpoints("b", "10.0.0.2"))
        await run.recorder.until(2)
    assert run.recorder.summary() == [("Upserted", "a"), ("Upserted", "b")]
    versions = [q["resourceVersion"] for q in watches(api)]
    assert versions[:2] == [listed_at, after_a]
    assert len(lists(api)) == 1
    timeouts = {int(q["timeoutSeconds"]) for q in watches(api)}
    assert all(300 <= t < 600 for t in timeouts)


async def test_expired_watch_relists_with_synthetic_deletes_and_only_changed_upserts(
    api: FakeApiServer, client: KubeClient
) -> None:
    for name in ("keep", "change", "vanish"):
        await api.put(CORE, "endpoints", endpoints(name, "10.0.0.1"))
    async with Running(client) as run:
        await run.recorder.until(3)
        # Changes the watch never sees, then the history is compacted and the watch ends.
        api.put_quietly(CORE, "endpoints", endpoints("change", "10.0.0.9"))
        api.delete_quietly(CORE, "endpoints", "default", "vanish")
        api.put_quietly(CORE, "endpoints", endpoints("new", "10.0.0.5"))
        api.compact()
        await api.close_watches()
        await run.recorder.until(6)
        assert run.recorder.summary()[3:] == [
            ("Deleted", "vanish"),
            ("Upserted", "change"),
            ("Upserted", "new"),
        ]
        assert run.recorder.events[3].obj.dests("http")[0] == frozenset({"10.0.0.1:8012"})
        assert set(run.reflector.store) == {
            ("default", "keep"),
            ("default", "change"),
            ("default", "new"),
        }
        assert len(lists(api)) == 4  # two pages, twice
        assert run.reflector.healthy


async def test_forbidden_list_is_logged_once_and_keeps_the_reflector_unhealthy(
    api: FakeApiServer, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.forbid("list", "endpoints")
    with caplog.at_level(logging.WARNING, LOGGER):
        async with Running(client) as run:
            await eventually(lambda: len(lists(api)) >= 4)
            assert not run.reflector.healthy
            assert not run.reflector.synced.is_set()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "endpoints in the cluster scope: forbidden: cannot list endpoints in the cluster "
        f"scope (as {IDENTITY}); retrying with back-off"
    ]


async def test_server_down_backs_off_unhealthy_then_recovers(
    api: FakeApiServer, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    await api.put(CORE, "endpoints", endpoints("a", "10.0.0.1"))
    backoffs: list[float] = []

    async def sleep(delay: float) -> None:
        backoffs.append(delay)
        await asyncio.sleep(delay)

    with caplog.at_level(logging.INFO, LOGGER):
        async with Running(client, sleep=sleep) as run:
            await asyncio.wait_for(run.reflector.synced.wait(), 5)
            await eventually(lambda: len(watches(api)) == 1)
            await api.stop()
            await eventually(lambda: not run.reflector.healthy)
            before = len(caplog.records)
            await eventually(lambda: len(backoffs) >= 5)  # a retry storm: still one line
            assert len(caplog.records) == before
            assert backoffs[-1] <= 0.05
            await api.put(CORE, "endpoints", endpoints("b", "10.0.0.2"))
            await api.start()
            await run.recorder.until(2)
            await eventually(lambda: run.reflector.healthy)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot reach the Kubernetes API" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert run.recorder.summary() == [("Upserted", "a"), ("Upserted", "b")]


async def test_malformed_object_is_skipped_with_one_warning_and_the_stream_goes_on(
    api: FakeApiServer, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = endpoints("bad", "10.0.0.1")
    bad["subsets"][0]["ports"][0]["port"] = "eighty"
    with caplog.at_level(logging.WARNING, LOGGER):
        async with Running(client) as run:
            await asyncio.wait_for(run.reflector.synced.wait(), 5)
            await api.put(CORE, "endpoints", bad)
            bad["metadata"]["annotations"] = {"again": "1"}
            await api.put(CORE, "endpoints", bad)
            await api.put(CORE, "endpoints", endpoints("good", "10.0.0.2"))
            await run.recorder.until(1)
    assert run.recorder.summary() == [("Upserted", "good")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "endpoints in the cluster scope: skipping default/bad: "
        "subsets[0].ports[0].port: expected a port number, got 'eighty'"
    ]


async def test_a_failing_event_handler_does_not_stop_the_reflector(
    api: FakeApiServer, client: KubeClient
) -> None:
    seen: list[str] = []

    def handler(event: Upserted[EndpointsInfo] | Deleted[EndpointsInfo]) -> None:
        seen.append(event.key[1])
        if event.key[1] == "boom":
            raise RuntimeError("consumer bug")

    reflector = Reflector(client, ENDPOINTS, decode_endpoints, handler)
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(reflector.synced.wait(), 5)
        await api.put(CORE, "endpoints", endpoints("boom", "10.0.0.1"))
        await api.put(CORE, "endpoints", endpoints("fine", "10.0.0.2"))
        await eventually(lambda: seen == ["boom", "fine"])
        assert reflector.healthy
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
