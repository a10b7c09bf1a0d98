"""A drain always ends within a bounded time after SIGTERM, whatever the clients do
(issue 15, item 2): a client that stopped reading a response is cut, in both components."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import activator.app as act_app
import queueproxy.main as qp_main
from proxy.http1 import Exchange
from tests.component.engine_harness import RawClient
from tests.component.test_activator_handler import HOST, Harness, Pod, config, revision
from tests.component.test_activator_handler import harness as harness
from tests.component.test_engine_stalled import flood, stop_reading
from tests.component.test_queueproxy_handler import QpRig, eventually
from tests.component.test_queueproxy_handler import rig as rig

pytestmark = pytest.mark.timeout(20)


async def stalled_client(port: int) -> RawClient:
    """A client that asks for a large response, then reads none of it."""
    client = await RawClient.connect(port, rcvbuf=4096)
    stop_reading(client)
    await client.send(b"GET /big HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
    return client


async def test_qp_drain_ends_with_a_stalled_reader(
    rig: QpRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qp_main, "DRAIN_MARGIN", 0.5)
    up = await rig.upstream(flood)
    qp = await rig.start(up.port, drain_quiet_seconds=0.05, revision_timeout_seconds=1)
    client = await stalled_client(qp.main.port)
    rig.engine.clients.append(client)
    await eventually(lambda: len(up.conns) == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    qp.terminate()
    await asyncio.wait_for(qp.run_until_terminated(), 8)
    assert loop.time() - started < 5
    assert qp.main.connection_count == 0


async def test_activator_drain_ends_with_a_stalled_reader(
    harness: Callable[..., Awaitable[Harness]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(act_app, "DRAIN_MARGIN", 0.5)

    async def big(ex: Exchange) -> None:
        ex.start_response(200, [], 64 * 1024 * 1024)
        block = b"z" * 65536
        for _ in range(1024):
            ex.write(block)
            await ex.drain()

    pod = await Pod(big).start()
    h = await harness(config(revision(pods=[pod], timeout_seconds=1)), drain_seconds=0.05)
    client = await stalled_client(h.activator.port)
    try:
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(h.activator.drain(), 8)
        assert loop.time() - started < 5
        assert h.activator.server.connection_count == 0
    finally:
        client.writer.transport.abort()
