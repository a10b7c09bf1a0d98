"""The Kubernetes source and the activator on it, against the in-process fake API server.

The fake server speaks the real list/watch protocol; a scripted queue-proxy on loopback
answers the activator's probes and requests, so these tests follow one request from Knative
objects to a pod without a cluster (the ``kube`` tier does the same with the real one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from activator.app import Activator, Settings
from activator.kube.client import KubeClient
from activator.kube.config import KubeConfig
from activator.kube.reflector import Backoff
from activator.kube.source import NOT_SYNCED, KubeSource, to_revision
from activator.kubeenv import KubeEnv
from activator.model import (
    ActivatorsChanged,
    ClusterIPChanged,
    MeshMode,
    NetworkChanged,
    PodsChanged,
    PodsRemoved,
    RevisionChanged,
    RevisionRemoved,
)
from activator.scaler import NullScaler
from activator.source import SourceHealth
from proxy.http1 import Exchange
from proxy.server import HttpServer
from tests.component.kube_fake_api import FakeApiServer

pytestmark = pytest.mark.timeout(20)

CORE = "api/v1"
SERVING = "apis/serving.knative.dev/v1"
ENV = KubeEnv(pod_name="activator-0", pod_ip="10.0.0.2", system_namespace="knative-serving")
FAST = {"watch_timeout": (5, 6), "min_watch_seconds": 0.01}


def revision(name: str, cc: int = 0, port_name: str | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"image": "dev.local/app"}
    if port_name is not None:
        container["ports"] = [{"name": port_name, "containerPort": 8080}]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {
                "serving.knative.dev/service": "hello",
                "serving.knative.dev/configuration": "hello",
            },
        },
        "spec": {"containerConcurrency": cc, "timeoutSeconds": 30, "containers": [container]},
    }


def endpoints(
    name: str,
    rev: str,
    kind: str,
    ready: list[str],
    not_ready: list[str] = (),  # type: ignore[assignment]
    port: tuple[str, int] = ("http", 8012),
) -> dict[str, Any]:
    labels = {
        "serving.knative.dev/revision": rev,
        "networking.internal.knative.dev/serviceType": kind,
    }
    if kind == "Private":
        labels["serving.knative.dev/revisionUID"] = "uid-" + rev
    return {
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "subsets": [
            {
                "addresses": [{"ip": ip} for ip in ready],
                "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                "ports": [{"name": port[0], "port": port[1]}],
            }
        ],
    }


def private_service(rev: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{rev}-private",
            "namespace": "default",
            "labels": {"networking.internal.knative.dev/serviceType": "Private"},
        },
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
    }


CONFIG_NETWORK = {
    "metadata": {"name": "config-network", "namespace": "knative-serving"},
    "data": {"_example": "# Knative's defaults"},
}


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    await server.put(CORE, "configmaps", CONFIG_NETWORK)
    yield server
    await server.stop()


@pytest.fixture
async def client(api: FakeApiServer) -> AsyncIterator[KubeClient]:
    c = KubeClient(KubeConfig(server=api.url))
    yield c
    await c.close()


async def collect(source: KubeSource, until: Any, limit: float = 5.0) -> list[Any]:
    """Updates from ``source`` until ``until(updates)`` holds."""
    got: list[Any] = []
    it = source.updates()
    try:
        async with asyncio.timeout(limit):
            async for update in it:
                got.append(update)
                if until(got):
                    return got
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    return got


async def test_knative_objects_become_one_update_each(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(SERVING, "revisions", revision("hello-00001", cc=10))
    await api.put(
        CORE,
        "endpoints",
        endpoints("hello-00001-private", "hello-00001", "Private", ["10.1.0.5"], ["10.1.0.6"]),
    )
    await api.put(
        CORE,
        "endpoints",
        endpoints("hello-00001", "hello-00001", "Public", ["10.0.0.9", "10.0.0.2", "10.0.0.10"]),
    )
    await api.put(CORE, "services", private_service("hello-00001", "10.96.0.7"))
    source = KubeSource(client, ENV, api_url=api.url, reflector_options=FAST, health_interval=0.01)
    got = await collect(source, lambda g: SourceHealth(None) in g)
    key = ("default", "hello-00001")
    assert got[0] == SourceHealth(f"waiting for the Kubernetes API at {api.url}")
    assert got[1] == NetworkChanged(MeshMode.AUTO, False)
    assert got[2] == SourceHealth(NOT_SYNCED)
    assert RevisionChanged(to_revision(source._revisions[key])) in got
    rev = next(u.revision for u in got if isinstance(u, RevisionChanged))
    assert (rev.container_concurrency, rev.timeout_seconds, rev.service) == (10, 30, "hello")
    assert PodsChanged(key, frozenset({"10.1.0.5:8012"}), frozenset({"10.1.0.6:8012"})) in got
    # Sorted as strings: 10.0.0.10 < 10.0.0.2 < 10.0.0.9, so we are the second of three.
    assert ActivatorsChanged(key, 3, 1) in got
    assert ClusterIPChanged(key, "10.96.0.7:80") in got


async def test_endpoints_before_their_h2c_revision_are_replayed_on_the_h2c_port(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(
        CORE,
        "endpoints",
        endpoints(
            "grpc-00001-private", "grpc-00001", "Private", ["10.1.0.5"], port=("http2", 8013)
        ),
    )
    source = KubeSource(client, ENV, api_url=api.url, reflector_options=FAST, health_interval=0.01)
    key = ("default", "grpc-00001")
    it = source.updates()
    seen: list[Any] = []
    try:
        async with asyncio.timeout(5):
            async for update in it:
                seen.append(update)
                if update == SourceHealth(None):
                    # No Revision yet: the port name defaults to "http", which lists nothing.
                    assert PodsChanged(key, frozenset(), frozenset()) in seen
                    await api.put(SERVING, "revisions", revision("grpc-00001", port_name="h2c"))
                if update == PodsChanged(key, frozenset({"10.1.0.5:8013"}), frozenset()):
                    break
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    assert any(isinstance(u, RevisionChanged) and u.revision.protocol == "h2c" for u in seen)


async def test_an_update_that_does_not_list_this_activator_is_ignored(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(SERVING, "revisions", revision("hello-00001"))
    await api.put(
        CORE, "endpoints", endpoints("hello-00001", "hello-00001", "Public", ["10.0.0.7"])
    )
    source = KubeSource(client, ENV, api_url=api.url, reflector_options=FAST, health_interval=0.01)
    got = await collect(source, lambda g: SourceHealth(None) in g)
    assert not [u for u in got if isinstance(u, ActivatorsChanged)]


async def test_deletes_and_health_follow_the_api_server(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(SERVING, "revisions", revision("hello-00001"))
    await api.put(
        CORE,
        "endpoints",
        endpoints("hello-00001-private", "hello-00001", "Private", ["10.1.0.5"]),
    )
    source = KubeSource(
        client,
        ENV,
        reflector_options={**FAST, "backoff": None},
        health_interval=0.01,
    )
    key = ("default", "hello-00001")
    it = source.updates()
    seen: list[Any] = []
    phase = "sync"
    try:
        async with asyncio.timeout(10):
            async for update in it:
                seen.append(update)
                if phase == "sync" and update == SourceHealth(None):
                    phase = "delete"
                    await api.delete(CORE, "endpoints", "default", "hello-00001-private")
                    await api.delete(SERVING, "revisions", "default", "hello-00001")
                elif phase == "delete" and {RevisionRemoved(key), PodsRemoved(key)} <= set(seen):
                    # Two watches: their events may come in either order.
                    phase = "down"
                    await api.stop()
                elif phase == "down" and isinstance(update, SourceHealth) and update.error:
                    assert "failing" in update.error
                    phase = "up"
                    await api.start()
                elif phase == "up" and update == SourceHealth(None):
                    break
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    assert phase == "up"


# ------------------------------------------------------------- the activator on top


class QueueProxy:
    """A loopback queue-proxy stand-in: probes answer ``queue``, requests echo the path."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes | None]] = []
        self.hosts: list[tuple[bytes | None, bytes | None]] = []
        self.server = HttpServer(self._handle)

    async def _handle(self, ex: Exchange) -> None:
        self.hosts.append((ex.header(b"host"), ex.header(b"k-passthrough-lb")))
        if ex.header(b"k-network-probe") == b"queue":
            ex.send(200, b"queue")
            return
        self.requests.append((ex.target, ex.header(b"k-proxy-request")))
        ex.send(200, b"hello from " + ex.target)

    async def start(self) -> str:
        await self.server.start("127.0.0.1", 0)
        return f"127.0.0.1:{self.server.port}"


async def serve_revision(api: FakeApiServer, name: str) -> QueueProxy:
    """A Revision in the API whose one ready pod is a loopback ``QueueProxy``."""
    qp = QueueProxy()
    await api.put(SERVING, "revisions", revision(name))
    host, port = (await qp.start()).split(":")
    eps = endpoints(f"{name}-private", name, "Private", [host], [], ("http", int(port)))
    await api.put(CORE, "endpoints", eps)
    return qp


async def started(client: KubeClient, api: FakeApiServer, **options: Any) -> Activator:
    """An activator on a ``KubeSource`` of ``api``, started and in step with it."""
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, probe_interval=0.02)
    source = KubeSource(
        client, ENV, api_url=api.url, reflector_options=FAST, health_interval=0.01, **options
    )
    act = Activator(settings, source, scaler=NullScaler())
    await act.start(wait_for_config=False)
    await act.wait_for(lambda: act.source_error is None)
    return act


async def test_a_revision_from_the_api_becomes_reachable_through_the_activator(
    api: FakeApiServer, client: KubeClient
) -> None:
    qp = QueueProxy()
    dest = await qp.start()
    host, port = dest.split(":")
    await api.put(SERVING, "revisions", revision("hello-00001", cc=2))
    settings = Settings(
        config=Path("unused"),
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        metrics_port=0,
        pod_name="activator-0",
        probe_interval=0.02,
        trust_routing_headers_from="127.0.0.0/8",  # the test plays Knative's ingress
    )
    source = KubeSource(client, ENV, api_url=api.url, reflector_options=FAST, health_interval=0.01)
    act = Activator(settings, source, scaler=NullScaler())
    await act.start(wait_for_config=False)
    session = aiohttp.ClientSession()
    try:
        await act.wait_for(lambda: act.source_error is None)
        assert len(act.ports) == 2
        # At zero pods the request waits in the throttler; the pods arrive while it waits.
        url = f"http://127.0.0.1:{act.ports[1]}/x"
        headers = {
            "Knative-Serving-Namespace": "default",
            "Knative-Serving-Revision": "hello-00001",
        }
        pending = asyncio.ensure_future(session.get(url, headers=headers))
        await asyncio.sleep(0.05)
        assert not pending.done()
        await api.put(
            CORE,
            "endpoints",
            endpoints(
                "hello-00001-private", "hello-00001", "Private", [], [host], ("http", int(port))
            ),
        )
        async with asyncio.timeout(5):
            resp = await pending
        assert resp.status == 200 and await resp.text() == "hello from /x"
        assert qp.requests == [(b"/x", b"activator")]
        # Kubelet probes: ready now that the lists are done.
        async with session.get(
            f"http://127.0.0.1:{act.port}/", headers={"User-Agent": "kube-probe/1.35"}
        ) as probe:
            assert probe.status == 200
        # An unknown revision is a 404 naming it, as Knative's activator answers.
        async with session.get(
            url, headers={**headers, "Knative-Serving-Revision": "nope"}
        ) as missing:
            assert missing.status == 404
            assert 'revision.serving.knative.dev "nope" not found' in await missing.text()
    finally:
        await session.close()
        await act.close()
        await qp.server.shutdown(grace=0)


async def kubelet_probe(act: Activator) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{act.port}/", headers={"K-Kubelet-Probe": "activator"}
        ) as probe,
    ):
        return probe.status, await probe.text()


async def test_unreachable_api_server_means_not_ready_and_is_retried(
    api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    await api.stop()  # it comes back on the same port later
    client = KubeClient(KubeConfig(server=api.url))
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0)
    source = KubeSource(
        client,
        ENV,
        api_url=api.url,
        backoff=Backoff(initial=0.01, maximum=0.05),
        reflector_options=FAST,
        health_interval=0.01,
    )
    act = Activator(settings, source, scaler=NullScaler())
    await act.start(wait_for_config=False)
    try:
        waiting = f"waiting for the Kubernetes API at {api.url}"
        await act.wait_for(lambda: act.source_error == waiting)
        assert await kubelet_probe(act) == (500, waiting + "\n")
        await asyncio.sleep(0.2)  # several retries...
        lines = [r for r in caplog.records if "not answering" in r.getMessage()]
        assert len(lines) == 1 and api.url in lines[0].getMessage()  # ...one log line
        await api.start()
        await act.wait_for(lambda: act.source_error is None)
        assert await kubelet_probe(act) == (200, "")
    finally:
        await act.close()
        await client.close()


async def test_missing_config_network_is_named_and_waited_for(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.delete(CORE, "configmaps", "knative-serving", "config-network")
    source = KubeSource(
        client,
        ENV,
        api_url=api.url,
        backoff=Backoff(initial=0.01, maximum=0.05),
        reflector_options=FAST,
        health_interval=0.01,
    )
    it = source.updates()
    seen: list[Any] = []
    try:
        async with asyncio.timeout(5):
            async for update in it:
                seen.append(update)
                if (
                    isinstance(update, SourceHealth)
                    and update.error
                    and "config-network" in (update.error)
                ):
                    assert "not found" in update.error
                    await api.put(CORE, "configmaps", CONFIG_NETWORK)
                if update == SourceHealth(None):
                    break
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    assert NetworkChanged() in seen


def kingress(rev: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "metadata": {
            "name": "hello",
            "namespace": "default",
            "generation": 1,
            "annotations": {"networking.knative.dev/ingress.class": "sluice"},
        },
        "spec": {
            "rules": [
                {
                    "hosts": ["hello.default.svc.cluster.local"],
                    "visibility": "ClusterLocal",
                    "http": {
                        "paths": [
                            {
                                "splits": [
                                    {
                                        "serviceName": rev,
                                        "serviceNamespace": "default",
                                        "servicePort": 80,
                                        "percent": 100,
                                        "appendHeaders": {
                                            "Knative-Serving-Revision": rev,
                                            "Knative-Serving-Namespace": "default",
                                        },
                                    }
                                ]
                            }
                        ]
                    },
                }
            ]
        },
    }


async def test_ingress_mode_routes_by_host_and_marks_the_ingress_ready(
    api: FakeApiServer, client: KubeClient
) -> None:
    qp = await serve_revision(api, "hello-00001")
    await api.put(
        "apis/networking.internal.knative.dev/v1alpha1", "ingresses", kingress("hello-00001")
    )
    act = await started(client, api, ingress_class="sluice")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{act.port}/via-host",
                headers={"Host": "hello.default.svc.cluster.local"},
            ) as resp,
        ):
            assert resp.status == 200 and await resp.text() == "hello from /via-host"
        group = "apis/networking.internal.knative.dev/v1alpha1"

        def status() -> dict[str, Any]:
            obj = api.object(group, "ingresses", "default", "hello")
            return dict((obj or {}).get("status") or {})

        async with asyncio.timeout(5):
            while not status():
                await asyncio.sleep(0.01)  # the patch is the activator's own write: no event
        written = status()
        assert written["observedGeneration"] == 1
        assert {"type": "Ready", "status": "True", "severity": ""} in written["conditions"]
        lb = written["privateLoadBalancer"]["ingress"][0]["domainInternal"]
        assert lb == "activator-service.knative-serving.svc.cluster.local"
    finally:
        await act.close()
        await qp.server.shutdown(grace=0)


async def test_a_forbidden_list_names_verb_and_resource_once(
    api: FakeApiServer, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.forbid("list", "endpoints")
    source = KubeSource(
        client,
        ENV,
        api_url=api.url,
        reflector_options={**FAST, "backoff": Backoff(initial=0.01, maximum=0.02)},
        health_interval=0.01,
    )
    it = source.updates()
    try:
        async with asyncio.timeout(5):
            async for update in it:
                if (
                    isinstance(update, SourceHealth)
                    and update.error
                    and "forbidden" in update.error
                ):
                    assert "cannot list endpoints in the cluster scope" in update.error
                    break
        await asyncio.sleep(0.2)  # many retries later
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    lines = [r.getMessage() for r in caplog.records if "forbidden" in r.getMessage()]
    # One line for each of the two Endpoints watches (private and public), not one per retry.
    assert len(lines) == 2, lines
    assert all("cannot list endpoints" in line for line in lines)


async def test_mesh_pod_addressability_sends_the_private_host_and_passthrough_header(
    api: FakeApiServer, client: KubeClient
) -> None:
    await api.put(
        CORE,
        "configmaps",
        {**CONFIG_NETWORK, "data": {"enable-mesh-pod-addressability": "true"}},
    )
    qp = await serve_revision(api, "hello-00001")
    act = await started(client, api)
    try:
        status, _ = await get(act, revision_headers("default", "hello-00001"))
        assert status == 200
        # The probe and the request both name the private Service, as Knative's do.
        assert set(qp.hosts) == {(b"hello-00001-private.default", b"true")}
    finally:
        await act.close()
        await qp.server.shutdown(grace=0)


def revision_headers(namespace: str, name: str) -> dict[str, str]:
    return {"Knative-Serving-Namespace": namespace, "Knative-Serving-Revision": name}


async def get(act: Activator, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{act.port}/", headers=headers) as resp,
    ):
        return resp.status, await resp.text()
