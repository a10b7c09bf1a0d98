"""The webhook scaler: JSON per revision entry, bounded queue, drops counted (catalogue H9)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from activator.scaler import NullScaler, WebhookScaler, webhook_payloads
from proxy.dataplane.autoscaler_stat_pb import Stat

pytestmark = pytest.mark.timeout(10)

BATCH = [("ns", "a", Stat(pod_name="p", average_concurrent_requests=1, request_count=1))]


async def receiver(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/stats", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/stats"


def test_payload_shape() -> None:
    assert webhook_payloads(BATCH, True) == [
        {"namespace": "ns", "revision": "a", "concurrency": 1, "requests": 1, "poke": True}
    ]
    NullScaler().poke(BATCH)  # goes nowhere, never fails


async def test_poke_and_report_are_posted_as_json() -> None:
    got: list[Any] = []
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.json())
        if len(got) == 2:
            done.set()
        return web.Response(text="ok")

    runner, url = await receiver(handle)
    scaler = WebhookScaler(url)
    scaler.start()
    try:
        scaler.poke(BATCH)
        scaler.report(BATCH)
        await asyncio.wait_for(done.wait(), 5)
        assert [g["poke"] for g in got] == [True, False]
        assert got[0]["revision"] == "a" and got[0]["namespace"] == "ns"
        assert scaler.dropped == 0 and scaler.sent == 2
    finally:
        await scaler.close()
        await runner.cleanup()


async def test_hanging_receiver_never_blocks_and_drops_are_counted() -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    runner, url = await receiver(hang)
    scaler = WebhookScaler(url, queue_size=2, timeout=0.2)
    scaler.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(100):
            scaler.report(BATCH)  # synchronous, returns at once
        assert loop.time() - start < 0.1
        assert scaler.dropped >= 97
        async with asyncio.timeout(5):
            while scaler.dropped < 100:  # the queued ones time out and count too
                await asyncio.sleep(0.05)
    finally:
        release.set()
        await scaler.close()
        await runner.cleanup()


async def test_unreachable_receiver_counts_drops() -> None:
    scaler = WebhookScaler("http://127.0.0.1:1/stats", timeout=0.5)
    scaler.start()
    try:
        scaler.poke(BATCH)
        async with asyncio.timeout(5):
            while scaler.dropped < 1:
                await asyncio.sleep(0.02)
    finally:
        await scaler.close()
