"""The API against a real ControlPlane whose loops are not started (so no process runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from activator.model import RoutingConfig
from serving.api import make_app
from serving.controlplane import ControlPlane
from serving.settings import UpSettings
from serving.state import StateStore, mark_ready

HELLO = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    metadata: {name: hello-v1}
    spec:
      containers: [{image: x, command: [python3, app.py]}]
"""
BAD = (
    HELLO
    + """
  traffic:
    - {revisionName: hello-v1, percent: 90}
"""
)


Env = tuple[TestClient, ControlPlane, list[RoutingConfig]]  # type: ignore[type-arg]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    published: list[RoutingConfig] = []
    settings = UpSettings(state_dir=tmp_path, port=8080)
    cp = ControlPlane(settings, StateStore(tmp_path), published.append)
    client = TestClient(TestServer(make_app(cp, {"api": "x"})))
    await client.start_server()
    try:
        yield client, cp, published
    finally:
        await client.close()


async def apply(
    client: TestClient[web.Request, web.Application], text: str
) -> tuple[int, dict[str, object]]:
    resp = await client.post(
        "/api/v1/apply",
        json={"documents": [{"source": "hello.yaml", "text": text, "workdir": "/"}]},
    )
    return resp.status, await resp.json()


@pytest.mark.timeout(10)
async def test_apply_then_get_shows_the_service_waiting_for_its_revision(env: Env) -> None:
    client, _, _ = env
    status, body = await apply(client, HELLO)
    assert (status, body) == (
        200,
        {
            "messages": ["service.serving.knative.dev/hello created"],
            "services": [["default", "hello"]],  # what `apply --wait` then waits for
            "warnings": [],  # fields accepted but not honoured, named (none here)
        },
    )
    rows = (await (await client.get("/api/v1/services")).json())["items"]
    assert rows[0]["name"] == "hello"
    assert rows[0]["url"] == "http://hello.default.localhost:8080"
    assert (rows[0]["latestCreated"], rows[0]["latestReady"]) == ("hello-v1", "")
    assert (rows[0]["ready"], rows[0]["reason"]) == ("Unknown", "RevisionMissing")
    revs = (await (await client.get("/api/v1/revisions")).json())["items"]
    assert [(r["name"], r["desired"], r["actual"]) for r in revs] == [("hello-v1", 1, 0)]


@pytest.mark.timeout(10)
async def test_a_bad_manifest_is_refused_whole_and_nothing_changes(env: Env) -> None:
    client, cp, _ = env
    await apply(client, HELLO)
    before = cp.state
    status, body = await apply(client, BAD)
    assert status == 422
    assert body["errors"] == ["hello.yaml:11: Traffic targets sum to 90, want 100: spec.traffic"]
    assert cp.state is before


@pytest.mark.timeout(10)
async def test_ready_revision_gets_the_route_and_tag_header_routing(env: Env) -> None:
    client, cp, _ = env
    await apply(client, HELLO)
    cp.state = mark_ready(cp.state, ("default", "hello"), "hello-v1")
    cfg = cp.routing_config()
    assert cfg.tag_header_routing is True
    assert [r.name for r in cfg.routes] == ["hello"]
    assert [r.name for r in cfg.revisions] == ["hello-v1"]
    describe = await (await client.get("/api/v1/namespaces/default/services/hello")).json()
    assert describe["traffic"] == [{"revision": "hello-v1", "percent": 100, "tag": "", "url": ""}]
    assert [c["status"] for c in describe["conditions"]] == ["True", "True", "True"]
    metrics = await (await client.get("/metrics")).text()
    assert 'sluice_revision_desired_pods{configuration_name="hello"' in metrics


@pytest.mark.timeout(10)
async def test_delete_and_unknown_service(env: Env) -> None:
    client, cp, _ = env
    await apply(client, HELLO)
    resp = await client.delete("/api/v1/namespaces/default/services/hello")
    assert resp.status == 200
    assert cp.state.services == {}
    resp = await client.get("/api/v1/namespaces/default/services/hello")
    assert resp.status == 404
    assert (await resp.json())["errors"] == ['services.serving.knative.dev "hello" not found']


@pytest.mark.timeout(10)
async def test_state_survives_a_new_control_plane(env: Env, tmp_path: Path) -> None:
    client, cp, _ = env
    await apply(client, HELLO)
    again = ControlPlane(cp.settings, StateStore(tmp_path), lambda cfg: None)
    again.restore()
    assert list(again.state.services) == [("default", "hello")]
    assert again.runtimes[("default", "hello-v1")].autoscaler.desired == 1
