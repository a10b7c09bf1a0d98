"""Chaos tier, real processes: an activator worker killed under load (issue 15, item 7).

``python -m activator --workers 2`` in file mode in front of the echo app; while clients
send a steady stream of requests, one worker is SIGKILLed. The supervisor starts it again
(issue 15 item 6); requests keep succeeding, bar the few that were on the dead worker.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.e2e.test_activator_e2e import Procs, fetch, write_config
from tests.e2e.test_activator_e2e import procs as procs

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(90)]


def workers_of(pid: int) -> list[psutil.Process]:
    """The live worker processes of the supervisor ``pid`` (a killed one not yet reaped is
    a zombie: not counted)."""
    out = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "activator" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


async def test_a_worker_killed_under_load_is_restarted_and_traffic_goes_on(
    tmp_path: Path, procs: Procs
) -> None:
    pod = await procs.echo()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        [{"name": "hello-1", "containerConcurrency": 0, "endpoints": [f"127.0.0.1:{pod}"]}],
        [{"revisionName": "hello-1", "percent": 100}],
    )
    proc, port = await procs.activator(
        cfg, "--workers", "2", "--drain-seconds", "0.2", "--metrics-port", "0"
    )
    async with asyncio.timeout(20):
        while len(workers_of(proc.pid)) < 2:
            await asyncio.sleep(0.05)
    first = {p.pid for p in workers_of(proc.pid)}
    results: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()
    stop = loop.time() + 6.0
    conn = aiohttp.TCPConnector(force_close=True)  # a new connection per request
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=10)) as s:

        async def load() -> None:
            while loop.time() < stop:
                try:
                    status, _ = await fetch(s, port, "/?sleep=0.01")
                except aiohttp.ClientError:
                    status = -1
                results.append((loop.time(), status))

        clients = [asyncio.create_task(load()) for _ in range(16)]
        try:
            await asyncio.sleep(1.5)
            victim = sorted(first)[0]
            killed_at = loop.time()
            psutil.Process(victim).send_signal(signal.SIGKILL)
            async with asyncio.timeout(15):
                while True:
                    now = {p.pid for p in workers_of(proc.pid)}
                    if len(now) == 2 and victim not in now:
                        break
                    await asyncio.sleep(0.05)
            await asyncio.gather(*clients)
        finally:
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    failed = [t for t, status in results if status != 200]
    assert len(results) > 300
    assert len(failed) <= max(5, len(results) // 50), (len(failed), len(results))
    assert all(t < killed_at + 3.0 for t in failed)  # only around the kill itself
    assert proc.returncode is None  # the activator never went down
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
