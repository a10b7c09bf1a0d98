"""The thin Kubernetes client against an in-process fake API server on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from activator.kube.auth import TokenSource
from activator.kube.client import (
    ENDPOINTS,
    REVISIONS,
    ApiError,
    Expired,
    KubeClient,
    KubeError,
    Resource,
    TransportError,
)
from activator.kube.config import KubeConfig
from tests.component.kube_fake_api import IDENTITY, FakeApiServer
from tests.ports import closed_port

pytestmark = pytest.mark.timeout(20)

CORE = "api/v1"
SERVING = "apis/serving.knative.dev/v1"


def endpoints(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "http", "port": 8012}]}],
    }


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer(token="t0")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(api: FakeApiServer) -> AsyncIterator[KubeClient]:
    c = KubeClient(KubeConfig(server=api.url, token="t0"), page_size=3)
    try:
        yield c
    finally:
        await c.close()


async def test_resource_paths_for_core_and_group_collections() -> None:
    assert ENDPOINTS.path() == "/api/v1/endpoints"
    assert REVISIONS.path() == "/apis/serving.knative.dev/v1/revisions"
    cm = Resource("", "v1", "configmaps", "knative-serving")
    assert cm.path() == "/api/v1/namespaces/knative-serving/configmaps"
    assert cm.describe() == "configmaps in the namespace knative-serving"
    assert REVISIONS.describe() == "revisions.serving.knative.dev in the cluster scope"


async def test_wait_for_version_answers_with_the_server_version(client: KubeClient) -> None:
    version = await client.wait_for_version(timeout=2, interval=0.01)
    assert version["gitVersion"] == "v1.33.0-fake"


async def test_wait_for_version_logs_once_then_fails_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with KubeClient(KubeConfig(server=url)) as c:
        with (
            caplog.at_level(logging.WARNING, "sluice.activator.kube"),
            pytest.raises(KubeError) as err,
        ):
            await c.wait_for_version(timeout=0.2, interval=0.02)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{url}/version" in warnings[0].getMessage()
    assert str(err.value).startswith(f"Kubernetes API at {url}/version did not answer in 0.2s")
    assert "\n" not in str(err.value)


async def test_list_follows_continue_tokens_across_pages(
    api: FakeApiServer, client: KubeClient
) -> None:
    for i in range(7):
        await api.put(CORE, "endpoints", endpoints(f"ep{i}", serviceType="Private"))
    await api.put(CORE, "endpoints", endpoints("other", serviceType="Public"))
    items, rv = await client.list(ENDPOINTS, "serviceType=Private")
    assert [i["metadata"]["name"] for i in items] == [f"ep{i}" for i in range(7)]
    assert rv == str(api.rv)
    lists = [q for p, q in api.requests if p == "/api/v1/endpoints"]
    assert [q.get("limit") for q in lists] == ["3", "3", "3"]
    assert [("continue" in q) for q in lists] == [False, True, True]
    assert all(q["labelSelector"] == "serviceType=Private" for q in lists)


async def test_list_restarts_unpaged_when_the_continue_token_expires(
    api: FakeApiServer, client: KubeClient
) -> None:
    for i in range(5):
        await api.put(CORE, "endpoints", endpoints(f"ep{i}"))

    def history_moves_on_and_is_compacted() -> None:
        api.rv += 1
        api.compact()

    api.after_list_page = history_moves_on_and_is_compacted
    items, _ = await client.list(ENDPOINTS)
    assert len(items) == 5
    lists = [q for p, q in api.requests if p == "/api/v1/endpoints"]
    assert [q.get("limit") for q in lists] == ["3", "3", None]


async def test_forbidden_list_is_one_line_naming_verb_resource_and_identity(
    api: FakeApiServer, client: KubeClient
) -> None:
    api.forbid("list", "endpoints")
    with pytest.raises(ApiError) as err:
        await client.list(ENDPOINTS)
    assert err.value.status == 403
    assert str(err.value) == (
        f"forbidden: cannot list endpoints in the cluster scope (as {IDENTITY})"
    )


async def test_unauthorized_names_status_and_resource(api: FakeApiServer) -> None:
    async with KubeClient(KubeConfig(server=api.url, token="wrong")) as c:
        with pytest.raises(ApiError) as err:
            await c.list(REVISIONS)
    assert str(err.value) == (
        "list revisions.serving.knative.dev in the cluster scope: 401 Unauthorized: Unauthorized"
    )


async def test_watch_streams_events_and_bookmarks_from_a_version(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(CORE, "endpoints", endpoints("before"))
    start = str(api.rv)
    got: list[tuple[str, str]] = []
    async with client.watch(ENDPOINTS, start, timeout_seconds=5) as events:
        await events.open()
        await api.put(CORE, "endpoints", endpoints("a"))
        await api.put(CORE, "endpoints", endpoints("a", extra="x"))
        await api.bookmark()
        await api.delete(CORE, "endpoints", "default", "a")
        async for kind, obj in events:
            got.append((kind, obj["metadata"].get("name", obj["metadata"]["resourceVersion"])))
            if kind == "DELETED":
                break
    assert got == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("BOOKMARK", str(api.rv - 1)),
        ("DELETED", "a"),
    ]
    watch = next(q for _, q in api.requests if q.get("watch") == "true")
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["resourceVersion"] == start
    assert watch["timeoutSeconds"] == "5"


async def test_watch_ends_when_the_server_closes_the_stream(
    api: FakeApiServer, client: KubeClient
) -> None:
    api.close_watches_after = 1
    await api.put(CORE, "endpoints", endpoints("a"))
    await api.put(CORE, "endpoints", endpoints("b"))
    async with client.watch(ENDPOINTS, "100") as events:
        got = [obj["metadata"]["name"] async for _, obj in events]
    assert got == ["a"]


async def test_watch_from_a_compacted_version_raises_expired(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(CORE, "endpoints", endpoints("a"))
    api.compact()
    with pytest.raises(Expired) as err:
        async with client.watch(ENDPOINTS, "100") as events:
            async for _ in events:
                pass
    assert err.value.status == 410
    assert "too old resource version" in str(err.value)


async def test_watch_line_over_the_bound_is_a_transport_error(api: FakeApiServer) -> None:
    big = endpoints("big")
    big["metadata"]["annotations"] = {"blob": "x" * 200_000}
    await api.put(CORE, "endpoints", big)
    async with KubeClient(KubeConfig(server=api.url, token="t0"), max_line=64 << 10) as c:
        with pytest.raises(TransportError, match="event over 65536 bytes"):
            async with c.watch(ENDPOINTS, "100") as events:
                async for _ in events:
                    pass


async def test_rotated_token_file_is_sent_after_the_reread_interval(
    api: FakeApiServer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("t0\n")
    config = KubeConfig(server=api.url, token_file=str(token))
    now = [0.0]
    tokens = TokenSource(config, reread_seconds=60, clock=lambda: now[0])
    async with KubeClient(config, tokens=tokens) as c:
        await c.get("/version")
        api.token = "t1"
        token.write_text("t1\n")
        now[0] = 30.0
        with pytest.raises(ApiError):
            await c.get("/version")  # still the cached t0
        now[0] = 61.0
        await c.get("/version")
    assert api.tokens_seen == ["t0", "t0", "t1"]


async def test_server_that_goes_away_is_a_transport_error(api: FakeApiServer) -> None:
    async with KubeClient(KubeConfig(server=api.url, token="t0")) as c:
        await api.stop()
        with pytest.raises(TransportError, match=r"cannot reach the Kubernetes API at http://"):
            await c.list(ENDPOINTS)
        await api.start()
        items, _ = await asyncio.wait_for(c.list(ENDPOINTS), 5)
        assert items == []
