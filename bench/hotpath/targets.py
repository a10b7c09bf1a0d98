"""The targets under test: how each is started, where it listens, and when it is ready.

``start_target`` either returns a ``Running`` target or raises ``Skip`` with a one-line reason
(module not importable, tool not installed, not ready in time); the benchmark reports skips
and carries on with the other targets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.hotpath.backends import (
    HELLO,
    Backend,
    start_haproxy,
    start_nginx_proxy,
)
from bench.hotpath.procs import (
    Proc,
    ProcGroup,
    free_port,
    have,
    probe_ok,
    tree_rss_kib,
    wait_until,
)

TARGETS = (
    "direct",
    "nginx",
    "haproxy",
    "sluice-engine",
    "queue-proxy-cc0",
    "queue-proxy-cc10",
    "activator-cc0",
    "go-queue-proxy-cc0",
    "go-queue-proxy-cc10",
)
#: What runs without ``--targets``: Go's sidecar binds fixed ports (below), so only one of
#: its two targets can run in one network namespace; CC 0 is Knative's default.
DEFAULT_TARGETS = tuple(t for t in TARGETS if t != "go-queue-proxy-cc10")
#: Knative's Go queue-proxy v1.23.0 (``knative.dev/serving`` v0.50.0 ``cmd/queue``), built as
#: a test peer by ``tests/kube/peers/build.sh``; never committed.
GO_QUEUE_PROXY = Path("tests/kube/peers/bin/queue")
#: Ports Go's sidecar binds on every address whatever its environment says (admin, stats).
GO_FIXED_PORTS = (8022, 9090)
#: ``OBSERVABILITY_CONFIG`` as v1.23.0's controller writes it for Knative's released
#: ``config-observability`` (every key under ``_example``: request metrics ``none``).
GO_OBSERVABILITY = json.dumps(
    {
        "tracing": {"protocol": "none"},
        "metrics": {"protocol": "none"},
        "runtime": {"profiling": "disabled", "exportInterval": 15_000_000_000},
        "requestMetrics": {"protocol": "none"},
    },
    separators=(",", ":"),
)
#: Seconds a target gets from exec to answering its readiness probe.
READY_TIMEOUT_S = 20.0
ACTIVATOR_HOST = "hello.default.localhost"
_KUBE_PROBE = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}
#: Variables passed through from our own environment so that the interpreter still runs.
_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


class Skip(Exception):
    """This target cannot be measured here; the message says why."""


@dataclass(frozen=True, slots=True)
class Running:
    """A started target. ``pid`` is the process whose CPU is charged per request."""

    name: str
    port: int
    pid: int
    cpu_of: str  # "proxy", or "backend" for ``direct``
    headers: Mapping[str, str] = field(default_factory=dict)
    proc: Proc | None = None
    startup_s: float | None = None
    idle_rss_kib: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def queue_proxy_env(
    *,
    backend_port: int,
    serving_port: int,
    tls_port: int,
    admin_port: int,
    stats_port: int,
    metrics_port: int,
    container_concurrency: int,
    base: Mapping[str, str],
) -> dict[str, str]:
    """Knative's queue-proxy environment contract, and nothing else but Sluice's port moves."""
    env = {k: base[k] for k in _PASSTHROUGH_ENV if k in base}
    probe = {"tcpSocket": {"port": backend_port, "host": "127.0.0.1"}, "successThreshold": 1}
    env.update(
        SERVING_NAMESPACE="default",
        SERVING_CONFIGURATION="hello",
        SERVING_REVISION="hello-00001",
        SERVING_POD="hello-pod",
        SERVING_POD_IP="127.0.0.1",
        SERVING_SERVICE="hello",
        QUEUE_SERVING_PORT=str(serving_port),
        QUEUE_SERVING_TLS_PORT=str(tls_port),
        USER_PORT=str(backend_port),
        CONTAINER_CONCURRENCY=str(container_concurrency),
        REVISION_TIMEOUT_SECONDS="300",
        SERVING_LOGGING_CONFIG="",
        SERVING_LOGGING_LEVEL="info",
        SERVING_REQUEST_METRICS_BACKEND="prometheus",
        SERVING_READINESS_PROBE=json.dumps(probe, separators=(",", ":")),
        SLUICE_ADMIN_PORT=str(admin_port),
        SLUICE_STATS_PORT=str(stats_port),
        SLUICE_METRICS_PORT=str(metrics_port),
    )
    return env


def go_queue_proxy_env(
    *, backend_port: int, serving_port: int, tls_port: int, container_concurrency: int
) -> dict[str, str]:
    """The environment Knative v1.23.0's controller sets on its own sidecar (queue.go)."""
    probe = {"tcpSocket": {"port": backend_port, "host": "127.0.0.1"}, "successThreshold": 1}
    return {
        "SERVING_NAMESPACE": "default",
        "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "QUEUE_SERVING_PORT": str(serving_port),
        "QUEUE_SERVING_TLS_PORT": str(tls_port),
        "CONTAINER_CONCURRENCY": str(container_concurrency),
        "REVISION_TIMEOUT_SECONDS": "300",
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "0",
        "REVISION_IDLE_TIMEOUT_SECONDS": "0",
        "SERVING_POD": "hello-pod",
        "SERVING_POD_IP": "127.0.0.1",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "USER_PORT": str(backend_port),
        "SYSTEM_NAMESPACE": "knative-serving",
        "SERVING_READINESS_PROBE": json.dumps(probe, separators=(",", ":")),
        "HOST_IP": "127.0.0.1",
        "ENABLE_HTTP2_AUTO_DETECTION": "false",
        "ENABLE_HTTP_FULL_DUPLEX": "false",
        "ROOT_CA": "",
        "ENABLE_MULTI_CONTAINER_PROBES": "false",
        "OBSERVABILITY_CONFIG": GO_OBSERVABILITY,
    }


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))  # Go binds every address
        except OSError:
            return True
    return False


def activator_config(backend_port: int, container_concurrency: int = 0) -> str:
    """A static source file: route ``hello`` in ``default``, 100% to ``hello-00001``."""
    return f"""domain: localhost
routes:
  - name: hello
    namespace: default
    traffic:
      - revisionName: hello-00001
        percent: 100
revisions:
  - name: hello-00001
    namespace: default
    containerConcurrency: {container_concurrency}
    endpoints: ["127.0.0.1:{backend_port}"]
"""


def _importable(module: str) -> bool:
    """Whether ``python -m module`` would find something to run (packages need __main__)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _await_ready(
    name: str, proc: Proc, port: int, headers: Mapping[str, str], want: bytes, cpu_of: str
) -> Running:
    startup = wait_until(proc, lambda: probe_ok(port, headers, want), READY_TIMEOUT_S)
    if startup is None:
        why = "exited" if not proc.alive() else f"not ready after {READY_TIMEOUT_S:.0f} s"
        raise Skip(f"{why}; log: {proc.log_tail(3) or '(empty)'}")
    return Running(
        name=name,
        port=port,
        pid=proc.pid,
        cpu_of=cpu_of,
        headers={k: v for k, v in headers.items() if k == "Host"},
        proc=proc,
        startup_s=startup,
        idle_rss_kib=tree_rss_kib(proc.pid),
    )


def start_target(
    name: str, group: ProcGroup, backend: Backend, cpu: int | None, repo: Path
) -> Running:
    """Start target ``name`` pinned to ``cpu``; raises ``Skip`` when it cannot be measured."""
    hello = HELLO.strip().encode()
    py = sys.executable
    if name == "direct":
        return Running(name, backend.port, backend.proc.pid, "backend")
    port = free_port()
    if name == "nginx":
        if not have("nginx"):
            raise Skip("nginx is not installed")
        proc = start_nginx_proxy(group, port, backend.port, cpu)
        return _await_ready(name, proc, port, {}, hello, "proxy")
    if name == "haproxy":
        if not have("haproxy"):
            raise Skip("haproxy is not installed")
        proc = start_haproxy(group, port, backend.port, cpu)
        return _await_ready(name, proc, port, {}, hello, "proxy")
    if name == "sluice-engine":
        if not _importable("proxy.passthrough"):
            raise Skip("proxy.passthrough is not importable")
        argv = [py, "-m", "proxy.passthrough", "--listen", f"127.0.0.1:{port}"]
        argv += ["--upstream", f"127.0.0.1:{backend.port}"]
        proc = group.spawn(name, argv, cpu=cpu, cwd=repo)
        return _await_ready(name, proc, port, {}, hello, "proxy")
    if name.startswith("queue-proxy-cc"):
        if not _importable("queueproxy.__main__"):
            raise Skip("python -m queueproxy: no queueproxy/__main__.py")
        env = queue_proxy_env(
            backend_port=backend.port,
            serving_port=port,
            tls_port=free_port(),
            admin_port=free_port(),
            stats_port=free_port(),
            metrics_port=free_port(),
            container_concurrency=int(name.removeprefix("queue-proxy-cc")),
            base=os.environ,
        )
        proc = group.spawn(name, [py, "-m", "queueproxy"], cpu=cpu, env=env, cwd=repo)
        return _await_ready(name, proc, port, _KUBE_PROBE, b"queue", "proxy")
    if name == "activator-cc0":
        if not _importable("activator.__main__"):
            raise Skip("python -m activator: no activator/__main__.py")
        conf = group.log_dir / "activator.yaml"
        conf.write_text(activator_config(backend.port))
        argv = [py, "-m", "activator", "--config", str(conf), "--port", str(port)]
        argv += ["--metrics-port", str(free_port())]
        proc = group.spawn(name, argv, cpu=cpu, cwd=repo)
        headers = {"Host": ACTIVATOR_HOST, "K-Network-Probe": "activator"}
        return _await_ready(name, proc, port, headers, b"activator", "proxy")
    if name.startswith("go-queue-proxy-cc"):
        binary = repo / GO_QUEUE_PROXY
        if not os.access(binary, os.X_OK):
            raise Skip(f"{GO_QUEUE_PROXY} is missing; build it with tests/kube/peers/build.sh")
        taken = [str(p) for p in GO_FIXED_PORTS if _port_taken(p)]
        if taken:
            raise Skip(
                f"port(s) {', '.join(taken)} in use (another Go queue-proxy?); "
                "run with --netns for a private network namespace"
            )
        env = go_queue_proxy_env(
            backend_port=backend.port,
            serving_port=port,
            tls_port=free_port(),
            container_concurrency=int(name.removeprefix("go-queue-proxy-cc")),
        )
        proc = group.spawn(name, [str(binary)], cpu=cpu, env=env, cwd=repo)
        return _await_ready(name, proc, port, _KUBE_PROBE, b"queue", "proxy")
    raise Skip(f"unknown target (known: {', '.join(TARGETS)})")
