"""Sluice's activator as a real process against the kube tier's control plane.

``ActivatorProc`` runs ``python -m activator`` in Kubernetes mode exactly as Knative's
Deployment would (``POD_NAME``, ``POD_IP``, ``SYSTEM_NAMESPACE``, no ``--config``), with a
kubeconfig carrying a service account's token (so RBAC is the account's), its own loopback
address (``--host``) for ports 8012/8013 and metrics, and the real autoscaler's websocket.

``grant`` makes a service account bound to Knative's activator ClusterRole and Role, plus any
extra ClusterRoles (ingress mode's), so a test can run with exactly the RBAC it names.
``Load`` sends requests from threads and counts every outcome: what a user sees.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.kube.cluster import SYSTEM_NAMESPACE, KubeCluster
from tests.kube.procs import Proc, base_env
from tests.ports import free_port

__all__ = ["ActivatorProc", "Load", "grant", "request"]

ACTIVATOR_CLUSTER_ROLE = "knative-serving-activator-cluster"
ACTIVATOR_ROLE = "knative-serving-activator"
HTTP_PORT = 8012
H2C_PORT = 8013


def grant(cluster: KubeCluster, sa: str, cluster_roles: Sequence[str] = ()) -> None:
    """Service account ``knative-serving/sa`` with Knative's activator RBAC and
    ``cluster_roles`` on top (idempotent: ``kubectl apply``)."""
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": SYSTEM_NAMESPACE}]
    rbac = "rbac.authorization.k8s.io"
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": SYSTEM_NAMESPACE},
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{sa}-{ACTIVATOR_ROLE}", "namespace": SYSTEM_NAMESPACE},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": ACTIVATOR_ROLE},
            "subjects": subject,
        },
    ]
    for role in (ACTIVATOR_CLUSTER_ROLE, *cluster_roles):
        items.append(
            {
                "apiVersion": f"{rbac}/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{sa}-{role}"},
                "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": role},
                "subjects": subject,
            }
        )
    cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def request(
    ip: str,
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    port: int = HTTP_PORT,
    timeout: float = 30.0,
) -> tuple[int, str]:
    """One GET on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


@dataclass(eq=False)
class ActivatorProc:
    """One ``python -m activator`` in Kubernetes mode. ``start``, then always ``stop``."""

    cluster: KubeCluster
    ip: str
    service_account: str = "activator"
    args: Sequence[str] = ()
    pod_name: str = ""
    proc: Proc | None = None
    metrics_port: int = field(default_factory=free_port)

    def start(self) -> ActivatorProc:
        name = self.pod_name or f"activator-{self.ip.replace('.', '-')}"
        env = base_env(
            POD_NAME=name,
            POD_IP=self.ip,
            SYSTEM_NAMESPACE=SYSTEM_NAMESPACE,
            CONFIG_LOGGING_NAME="config-logging",
            CONFIG_OBSERVABILITY_NAME="config-observability",
            PROBE_FREQUENCY="100ms",
            PYTHONUNBUFFERED="1",
        )
        argv = [
            sys.executable,
            "-m",
            "activator",
            "--kubeconfig",
            str(self.cluster.kubeconfig_for(self.service_account)),
            "--autoscaler-url",
            self.cluster.autoscaler_ws_url,
            "--host",
            self.ip,
            "--port",
            str(HTTP_PORT),
            "--h2c-port",
            str(H2C_PORT),
            "--metrics-port",
            str(self.metrics_port),
            "--drain-seconds",
            "1",
            *self.args,
        ]
        self.proc = self.cluster.supervisor.start(
            name, argv, env, cwd=_repo_root(), log_name=f"sluice-{name}"
        )
        return self

    def probe(self) -> tuple[int, str]:
        """The kubelet's readiness probe, as Knative's Deployment sends it."""
        try:
            return request(self.ip, headers={"K-Kubelet-Probe": "activator"}, timeout=5)
        except OSError as exc:
            return 0, str(exc)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.alive(), self.log_tail()
            last = self.probe()
            if last[0] == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"activator {self.ip} not ready in {timeout:.0f}s: {last}")

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"activator {self.ip}: {what} not seen in {timeout:.0f}s")
            time.sleep(0.1)

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace") if self.proc is not None else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def metrics(self) -> str:
        return request(self.ip, "/metrics", port=self.metrics_port, timeout=5)[1]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(15.0)
            self.cluster.supervisor.forget(self.proc)


def _repo_root() -> Any:
    from tests.kube.kubelet import ROOT

    return ROOT


@dataclass(eq=False)
class Load:
    """``workers`` threads sending GETs until ``stop`` (or ``count`` requests in all).

    Every outcome is counted: ``statuses`` (0 = a connection error), ``bodies`` (the first
    line of each 200's body: which revision and pod answered) and ``errors`` (the first few
    non-200 answers, for the failure message). Each worker keeps one keep-alive connection
    and opens a new one after an error.
    """

    ip: str
    headers: Mapping[str, str]
    path: str = "/"
    workers: int = 8
    count: int | None = None
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _sent: int = 0

    def start(self) -> Load:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or (self.count is not None and self._sent >= self.count):
                return False
            self._sent += 1
            return True

    def _record(self, status: int, text: str) -> None:
        with self._lock:
            self.statuses[status] += 1
            if status == 200:
                self.bodies[text.split(" in ")[0]] += 1
            elif len(self.errors) < 10:
                self.errors.append(f"{status}: {text[:200]}")

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while self._take():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.ip, HTTP_PORT, timeout=60)
                conn.request("GET", self.path, headers=dict(self.headers))
                resp = conn.getresponse()
                self._record(resp.status, resp.read().decode(errors="replace"))
            except (OSError, http.client.HTTPException) as exc:
                self._record(0, f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def wait(self, timeout: float) -> Load:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self._stop.set()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for t in self._threads:
            t.join(70)
        return self

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.total - self.statuses[200]

    def summary(self) -> str:
        return f"{self.total} requests: {dict(self.statuses)}; {dict(self.bodies)}; {self.errors}"
