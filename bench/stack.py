"""What a scenario runs against, started on loopback and owned by a ``ProcGroup``.

* ``start_sluice``: ``sluice up`` with a fresh ``--state-dir``, free ports and the scenario's
  ``--autoscaler`` settings; ``Sluice.apply`` runs ``sluice apply -f`` as a user would, and
  ``Sluice.revisions`` reads the API's JSON (the same data as ``sluice get revisions -o json``).
* ``start_app`` / ``start_queue_proxy``: ``examples/apps/info.py`` alone, and a queue-proxy
  alone in front of it, with Knative's environment (as ``bench.hotpath`` starts it).

Everything is stopped by the group (process groups, SIGTERM then SIGKILL), also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hotpath.procs import Proc, ProcGroup, free_port, http_get, probe_ok, wait_until
from bench.hotpath.targets import queue_proxy_env

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
INFO_APP = EXAMPLES / "apps" / "info.py"
#: Seconds ``sluice up`` gets to answer on its API, and a revision to become ready.
UP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 30.0
API_TIMEOUT_S = 5.0
_KUBE_PROBE = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}


class StackError(RuntimeError):
    """Something the scenario needs did not start or did not become ready."""


def sluice_argv() -> list[str]:
    """The ``sluice`` console script next to our interpreter, else ``python -m serving.cli``."""
    script = Path(sys.executable).parent / "sluice"
    return [str(script)] if script.exists() else [sys.executable, "-m", "serving.cli"]


def poll(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Wait until ``check()``; seconds waited, or ``StackError`` naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Sluice:
    proc: Proc
    port: int
    api: str
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.api}{path}", timeout=API_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    def revisions(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/api/v1/revisions")["items"]
        return items

    def revision(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.revisions() if r["name"] == name), None)

    def cli(self, *args: str) -> str:
        """Run ``sluice --api API ARGS...``; its stdout, or ``StackError`` with its stderr."""
        done = subprocess.run(
            [*sluice_argv(), "--api", self.api, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise StackError(f"sluice {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, manifest: Path) -> str:
        return self.cli("apply", "-f", str(manifest))

    def wait_ready(self, revision: str, timeout: float = READY_TIMEOUT_S) -> float:
        def ready() -> bool:
            rev = self.revision(revision)
            return rev is not None and rev["ready"] == "True"

        return poll(ready, timeout, f"revision {revision} to be ready")

    def wait_routed(self, service: str, want: Mapping[str, int], timeout: float = 20.0) -> None:
        """Until the route of ``service`` sends ``want`` percent to each revision."""

        def routed() -> bool:
            for route in self.get("/api/v1/routes")["items"]:
                if route["name"] == service:
                    got: dict[str, int] = {}
                    for t in route["traffic"]:
                        got[t["revision"]] = got.get(t["revision"], 0) + int(t["percent"])
                    return {k: v for k, v in got.items() if v} == dict(want)
            return False

        poll(routed, timeout, f"route {service} -> {dict(want)}")

    def wait_scale(self, revision: str, actual: int, timeout: float = READY_TIMEOUT_S) -> float:
        def at() -> bool:
            rev = self.revision(revision)
            return rev is not None and int(rev["actual"]) == actual and rev["desired"] == actual

        return poll(at, timeout, f"revision {revision} at {actual} pods", interval=0.2)


def start_sluice(group: ProcGroup, autoscaler: Sequence[str] = (), name: str = "sluice") -> Sluice:
    """``sluice up`` on free loopback ports with a fresh state directory under the group's."""
    port, api_port = free_port(), free_port()
    api = f"127.0.0.1:{api_port}"
    state = group.log_dir / f"{name}-state"
    argv = [*sluice_argv(), "up", "--port", str(port), "--api", api, "--state-dir", str(state)]
    for item in autoscaler:
        argv += ["--autoscaler", item]
    proc = group.spawn(name, argv, cwd=REPO)
    sluice = Sluice(proc, port, api, state)

    def answering() -> bool:
        if not proc.alive():
            raise StackError(f"sluice up exited: {proc.log_tail(3)}")
        sluice.get("/api/v1/info")
        return True

    try:
        poll(answering, UP_TIMEOUT_S, "sluice up to answer on its API", interval=0.05)
    except (urllib.error.URLError, StackError) as exc:
        raise StackError(f"{exc}; log: {proc.log_tail(3)}") from None
    return sluice


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def start_app(
    group: ProcGroup, name: str = "app", env: Mapping[str, str] | None = None
) -> tuple[Proc, int]:
    """``examples/apps/info.py`` on a free port; ``(proc, port)`` once it answers."""
    port = free_port()
    app_env = {**_base_env(), "PORT": str(port), "K_SERVICE": "info", "K_REVISION": "info-direct"}
    app_env.update(env or {})
    proc = group.spawn(name, [sys.executable, str(INFO_APP)], env=app_env, cwd=REPO)

    def up() -> bool:
        return http_get(port, {})[0] == 200

    if wait_until(proc, lambda: _quiet(up), READY_TIMEOUT_S) is None:
        raise StackError(f"{name} did not answer: {proc.log_tail(3)}")
    return proc, port


def start_queue_proxy(
    group: ProcGroup, app_port: int, container_concurrency: int = 0, name: str = "queue-proxy"
) -> tuple[Proc, int]:
    """A queue-proxy alone in front of ``app_port``; ``(proc, port)`` once it is ready."""
    port = free_port()
    env = queue_proxy_env(
        backend_port=app_port,
        serving_port=port,
        tls_port=free_port(),
        admin_port=free_port(),
        stats_port=free_port(),
        metrics_port=free_port(),
        container_concurrency=container_concurrency,
        base=os.environ,
    )
    # Knative drains for 30 s after SIGTERM; sluice up's pods use 1 s; nothing is in flight
    # when a scenario stops its lone queue-proxy.
    env["SLUICE_DRAIN_QUIET_SECONDS"] = "0"
    proc = group.spawn(name, [sys.executable, "-m", "queueproxy"], env=env, cwd=REPO)
    if wait_until(proc, lambda: probe_ok(port, _KUBE_PROBE, b"queue"), READY_TIMEOUT_S) is None:
        raise StackError(f"{name} was not ready: {proc.log_tail(3)}")
    return proc, port


def _quiet(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except OSError:
        return False
