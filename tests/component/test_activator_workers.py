"""The activator's worker supervisor (issue 15, item 6): a dead worker is started again,
with back-off, while the others go on; a crash loop ends the set."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from activator.workers import Supervisor

pytestmark = pytest.mark.timeout(30)

#: A stand-in worker: records each start in ``<dir>/<index>``, exits with ``code`` on the
#: starts listed in ``die``, else serves until SIGTERM (exit 0).
WORKER = """
import os, signal, sys, time
path, index, code, die = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
with open(os.path.join(path, index), "a") as f:
    f.write(f"{os.getpid()}\\n")
starts = len(open(os.path.join(path, index)).read().split())
if str(starts) in die:
    sys.exit(code)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def worker(tmp: Path, die: dict[int, str], code: int = 3) -> Supervisor:
    def command(index: int) -> Sequence[str]:
        return [sys.executable, "-c", WORKER, str(tmp), str(index), str(code), die.get(index, "")]

    return Supervisor(command, 2, backoff_first=0.05, backoff_max=0.2, crash_loop=4)


def starts(tmp: Path, index: int) -> list[str]:
    path = tmp / str(index)
    return path.read_text().split() if path.exists() else []


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


async def test_a_dead_worker_is_restarted_while_the_other_serves(tmp_path: Path) -> None:
    sup = worker(tmp_path, {0: "1,2"})  # worker 0 dies on its first two starts
    run = asyncio.ensure_future(sup.run())
    try:
        await until(lambda: len(starts(tmp_path, 0)) == 3 and len(starts(tmp_path, 1)) == 1)
        survivor = sup.procs[1]
        await asyncio.sleep(0.3)
        assert survivor.returncode is None and sup.procs[1] is survivor  # never touched
        assert sup.procs[0].returncode is None  # the third start serves
        sup.signal(signal.SIGTERM)
        assert await asyncio.wait_for(run, 10) == 0
    finally:
        sup.signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), 10)


async def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    sup = worker(tmp_path, {})
    run = asyncio.ensure_future(sup.run())
    try:
        await until(lambda: len(starts(tmp_path, 0)) == 1 and len(starts(tmp_path, 1)) == 1)
        sup.procs[0].kill()
        await until(lambda: len(starts(tmp_path, 0)) == 2)
        sup.signal(signal.SIGTERM)
        assert await asyncio.wait_for(run, 10) == 0
    finally:
        sup.signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), 10)


async def test_a_crash_loop_stops_every_worker_with_its_code(tmp_path: Path) -> None:
    sup = worker(tmp_path, {0: "1,2,3,4,5,6"}, code=7)
    run = asyncio.ensure_future(sup.run())
    try:
        assert await asyncio.wait_for(run, 10) == 7
        assert len(starts(tmp_path, 0)) == 4
        assert sup.procs[1].returncode == 0  # stopped with SIGTERM, not left behind
    finally:
        sup.signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), 10)
