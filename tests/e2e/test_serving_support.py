"""Helpers for the serving end-to-end tests: a real ``sluice up`` and a small load generator.

Also holds the start-up refusal test, which needs nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SLUICE = [sys.executable, "-m", "serving.cli"]
#: Short windows so that scaling is visible within seconds (Knative allows 6 s at least).
FAST_AUTOSCALER = ("stable-window=6s", "scale-to-zero-grace-period=2s")


@dataclass
class Sluice:
    """One ``sluice up`` process on free ports with its own state directory."""

    state_dir: Path
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    children: set[int] = field(default_factory=set)

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def start(
        self,
        *paths: str | Path,
        autoscaler: Sequence[str] = FAST_AUTOSCALER,
        extra: Sequence[str] = (),
    ) -> None:
        args = [*SLUICE, "up", "--port", str(self.port), "--api", self.api,
                "--state-dir", str(self.state_dir), *extra]  # fmt: skip
        for item in autoscaler:
            args += ["--autoscaler", item]
        args += [str(p) for p in paths]
        # The child keeps its own descriptor of the log; ours is closed at once.
        with (self.state_dir.parent / f"up-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        wait_for(lambda: self._answers(), 20, "sluice up API")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sluice up exited with {self.proc.returncode}")
        try:
            self.get("/api/v1/info")
            return True
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.api}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*SLUICE, "--api", self.api, *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        if check and res.returncode != 0:
            raise AssertionError(f"sluice {' '.join(args)} failed: {res.stderr}")
        return res

    def revisions(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.get("/api/v1/revisions")["items"]}

    def route(self, name: str) -> list[tuple[str, int, str]]:
        for r in self.get("/api/v1/routes")["items"]:
            if r["name"] == name:
                return [(t["revision"], t["percent"], t["tag"]) for t in r["traffic"]]
        raise KeyError(name)

    def wait_ready(self, service: str, revision: str, timeout: float = 20) -> None:
        def ready() -> bool:
            rows = {s["name"]: s for s in self.get("/api/v1/services")["items"]}
            row = rows.get(service)
            return bool(row and row["latestReady"] == revision and row["ready"] == "True")

        wait_for(ready, timeout, f"{service} ready with {revision}")

    def remember_children(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            self.children |= {c.pid for c in psutil.Process(self.proc.pid).children(True)}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop ``sluice up``; every process it started must be gone afterwards."""
        assert self.proc is not None
        self.remember_children()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        wait_for(lambda: not any(psutil.pid_exists(p) and _alive(p) for p in self.children),
                 10, "pods to exit")  # fmt: skip
        return code


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def sluice_up(tmp: Path, *paths: str | Path, **kw: Any) -> Iterator[Sluice]:
    s = Sluice(tmp / "state")
    s.start(*paths, **kw)
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            assert s.stop() == 0


@dataclass
class LoadResult:
    revisions: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.revisions.values()) + sum(self.failures.values())

    def share(self, revision: str) -> float:
        return self.revisions[revision] / max(1, self.total)


async def load(
    port: int,
    host: str,
    requests: int,
    concurrency: int = 20,
    headers: dict[str, str] | None = None,
    path: str = "/",
    duration: float | None = None,
) -> LoadResult:
    """Send ``requests`` GETs (or keep sending for ``duration`` seconds) with ``concurrency``
    workers; count answers per revision and failures per status or error."""
    result = LoadResult()
    deadline = None if duration is None else time.monotonic() + duration
    remaining = [requests]
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def worker() -> None:
            while True:
                if deadline is not None:
                    if time.monotonic() >= deadline:
                        return
                elif remaining[0] <= 0:
                    return
                else:
                    remaining[0] -= 1
                try:
                    async with session.get(
                        f"http://127.0.0.1:{port}{path}", headers={"Host": host, **(headers or {})}
                    ) as resp:
                        body = await resp.read()
                        if resp.status == 200:
                            result.revisions[json.loads(body)["revision"]] += 1
                        else:
                            result.failures[f"{resp.status} {body[:80]!r}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.failures[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def run_load(*args: Any, **kw: Any) -> LoadResult:
    return asyncio.run(load(*args, **kw))


@pytest.mark.e2e
@pytest.mark.timeout(30)
def test_sluice_up_refuses_a_bad_manifest_before_starting_anything(tmp_path: Path) -> None:
    res = subprocess.run(
        [*SLUICE, "up", "--port", str(free_port()), "--api", f"127.0.0.1:{free_port()}",
         "--state-dir", str(tmp_path), str(EXAMPLES / "three-way" / "bad-sum-90.yaml")],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert res.returncode == 1
    assert "Traffic targets sum to 90, want 100: spec.traffic" in res.stderr
    assert not (tmp_path / "state.json").exists()
