"""Start the two sidecars under test, each in front of its own copy of the scripted app.

A ``Pair`` is Knative's Go queue-proxy (``tests/kube/peers/bin/queue`` for the v1.23.0
contract, ``queue-v1.10`` for v1.10.2) and Sluice's ``python -m queueproxy``, given the same
environment from ``tests.unit.knative_envs`` except for what must differ:

* ports. Go binds fixed ports on every address (admin 8022, stats 9090, request metrics
  9091), so the suite runs in a private network namespace (``run.sh``) and at most one Go
  sidecar runs at a time. Sluice gets the same variables and moves its ports with its
  ``SLUICE_*`` overrides (serving 18012, admin 18022, stats 19090, metrics 19091);
* ``USER_PORT`` and the readiness probe's port: each sidecar's own app instance.

Every process is started in its own session and stopped by process-group id.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.unit.knative_envs import observability_json, v123_env, v1102_env

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "app.py"
PEERS_BIN = ROOT / "tests" / "kube" / "peers" / "bin"
V123 = "v1.23.0"
V1102 = "v1.10.2"
GO_BINARIES = {V123: PEERS_BIN / "queue", V1102: PEERS_BIN / "queue-v1.10"}
READY_TIMEOUT_S = 20.0
KUBELET_PROBE = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}

#: (serving, tls, admin, stats, metrics) ports. Go's last three are compiled in.
GO_PORTS = (8012, 8112, 8022, 9090, 9091)
SLUICE_PORTS = (18012, 18112, 18022, 19090, 19091)


def missing_peers() -> list[Path]:
    return [p for p in GO_BINARIES.values() if not os.access(p, os.X_OK)]


def in_private_netns() -> bool:
    """Whether ``run.sh`` moved this process out of the network namespace it started in.

    ``run.sh`` records its own namespace's inode in ``CONFORMANCE_HOST_NETNS`` before
    ``unshare --net`` (``/proc/1`` may not be readable in a container, so PID 1 cannot serve).
    """
    host = os.environ.get("CONFORMANCE_HOST_NETNS", "")
    try:
        return bool(host) and os.stat("/proc/self/ns/net").st_ino != int(host)
    except (OSError, ValueError):
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s whole process group (it leads its own session), reap it and close
    the pipes it was given."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_app(log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    # The child holds its own copy of the log file; ours is closed as soon as it is started.
    with (log_dir / f"app-{time.monotonic_ns()}.err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(APP), "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        assert ready, "the conformance app did not start"
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("PORT="), line
        return proc, int(line[5:])
    except BaseException:
        stop(proc)
        raise


def knative_env(contract: str, app_port: int, **overrides: str) -> dict[str, str]:
    """The controller's environment for ``contract``, pointed at ``app_port``."""
    probe = {"tcpSocket": {"port": app_port, "host": "127.0.0.1"}, "successThreshold": 1}
    build = v123_env if contract == V123 else v1102_env
    env = build(
        USER_PORT=str(app_port),
        SERVING_READINESS_PROBE=json.dumps(probe, separators=(",", ":")),
        SERVING_POD_IP="127.0.0.1",
    )
    env.update(overrides)
    return env


def prometheus_overrides(contract: str) -> dict[str, str]:
    """Request metrics served as Prometheus text on 9091 (Knative's ConfigMap switch)."""
    if contract == V123:
        return {"OBSERVABILITY_CONFIG": observability_json(request_metrics="prometheus")}
    return {"SERVING_REQUEST_METRICS_BACKEND": "prometheus"}


@dataclass
class Sidecar:
    """One queue-proxy process and the app behind it."""

    kind: str  # "go" or "sluice"
    proc: subprocess.Popen[bytes]
    app: subprocess.Popen[bytes]
    app_port: int
    env: dict[str, str]
    log: Path
    ports: tuple[int, int, int, int, int]

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def admin_port(self) -> int:
        return self.ports[2]

    @property
    def stats_port(self) -> int:
        return self.ports[3]

    @property
    def metrics_port(self) -> int:
        return self.ports[4]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


@dataclass
class Pair:
    go: Sidecar
    sluice: Sidecar
    contract: str
    extra: dict[str, str] = field(default_factory=dict)

    def both(self) -> tuple[Sidecar, Sidecar]:
        return self.go, self.sluice


def _start_sidecar(kind: str, contract: str, overrides: dict[str, str], log_dir: Path) -> Sidecar:
    app, app_port = start_app(log_dir)
    try:
        env = knative_env(contract, app_port, **overrides)
        ports = GO_PORTS if kind == "go" else SLUICE_PORTS
        env["QUEUE_SERVING_PORT"], env["QUEUE_SERVING_TLS_PORT"] = str(ports[0]), str(ports[1])
        if kind == "go":
            argv = [str(GO_BINARIES[contract])]
        else:
            argv = [sys.executable, "-m", "queueproxy"]
            env["SLUICE_ADMIN_PORT"] = str(ports[2])
            env["SLUICE_STATS_PORT"] = str(ports[3])
            env["SLUICE_METRICS_PORT"] = str(ports[4])
        for port in ports:
            assert not port_open(port), f"{kind}: port {port} is already in use"
        log = log_dir / f"{kind}-{contract}-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
            )
        sidecar = Sidecar(kind, proc, app, app_port, env, log, ports)
    except BaseException:
        stop(app)
        raise
    try:
        _await_ready(sidecar)
    except BaseException:
        stop(proc)
        stop(app)
        raise
    return sidecar


def _await_ready(sidecar: Sidecar) -> None:
    from tests.conformance.client import get  # the client module imports nothing from here

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert sidecar.proc.poll() is None, f"{sidecar.kind} exited: {sidecar.log_text()}"
        with contextlib.suppress(OSError):
            if get(sidecar.port, "/", KUBELET_PROBE, timeout=2).status == 200:
                return
        assert time.monotonic() < deadline, f"{sidecar.kind} never ready: {sidecar.log_text()}"
        time.sleep(0.05)


def stop_sidecar(sidecar: Sidecar) -> None:
    stop(sidecar.proc)
    stop(sidecar.app)


@contextlib.contextmanager
def running_pair(contract: str, log_dir: Path, **overrides: str) -> Iterator[Pair]:
    """Go's and Sluice's sidecars under ``contract``'s env plus ``overrides``, then stopped."""
    go = _start_sidecar("go", contract, overrides, log_dir)
    try:
        sluice = _start_sidecar("sluice", contract, overrides, log_dir)
        try:
            yield Pair(go, sluice, contract, dict(overrides))
        finally:
            stop_sidecar(sluice)
    finally:
        stop_sidecar(go)
