"""The fake node: kubelet, ReplicaSet/Deployment controllers and endpoints controller in one.

No kubelet or kube-controller-manager runs in the kube tier, so :class:`FakeNode` plays them
for the Deployments Knative's revision reconciler creates (label
``serving.knative.dev/revision``):

* per Deployment it creates a ReplicaSet (owned by the Deployment) for the current template,
  and per wanted replica a Pod (owned by the ReplicaSet, ``spec.nodeName`` set, labels and
  annotations from the template plus ``pod-template-hash``) with its own loopback address
  from 127.0.20.0/22, never handed out twice while a pod holds it;
* it runs the pod's containers as local processes in their own process groups: the
  ``queue-proxy`` container as :class:`QueueProxy` says (Knative's Go ``queue`` or
  ``python -m queueproxy``), any other container by looking its image up in ``apps``; each
  gets the template's ``env`` with ``fieldRef``s resolved, plus ``SLUICE_BIND_HOST=<pod ip>``;
  an image with no command is reported as ``ErrImagePull``; a container that exits is
  restarted with a 1-10 s backoff and its exit recorded in ``lastState.terminated`` (so the
  revision reconciler can report it);
* it runs the containers' readiness probes (httpGet, tcpSocket; exec/grpc count as ready
  while running) every :data:`TICK` seconds and writes Pod ``status`` (phase, podIP,
  conditions, containerStatuses), Deployment and ReplicaSet ``status`` (replicas, ready,
  available, Available/Progressing, ProgressDeadlineExceeded after the template's deadline);
* it writes the Endpoints of every Service with a selector (so ``<rev>-private``) from its
  pods, and the ``activator-service`` Endpoints of knative-serving on request
  (:meth:`FakeNode.set_activator_endpoints`);
* when ``spec.replicas`` drops (the KPA scaling) or the Deployment goes, it deletes surplus
  pods gracefully: DELETE with a grace period (the Pod gets ``deletionTimestamp``, so the
  autoscaler sees it terminating and it leaves the Endpoints), SIGTERM to every container,
  SIGKILL after the grace (at most :data:`MAX_GRACE_SECONDS`), then the final DELETE.

Limits: there is no garbage collector (deleting a Knative Service leaves its Deployment
unless the test deletes it), no scheduler, no volumes. Knative's Go queue-proxy binds its
ports on all addresses, so only one pod with Go's queue can run at a time; Sluice's honours
``SLUICE_BIND_HOST``.

Threads: one watch thread per kind feeds an event queue; one worker thread owns every pod and
all writes (one writer); terminations run in short-lived threads that report back through the
queue. :meth:`FakeNode.wait_for_pods` lets tests await the node's state.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import queue
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.kube.api import ApiError, KubeApi
from tests.kube.podspec import (
    ContainerView,
    PodView,
    container_env,
    deployment_status,
    endpoints_subsets,
    make_pod,
    make_replicaset,
    pod_status,
    template_hash,
)
from tests.kube.procs import Proc, Supervisor, base_env, tail

__all__ = ["ACTIVATOR_PORTS", "FakeNode", "QueueProxy"]

ROOT = Path(__file__).resolve().parents[2]
REVISION_LABEL = "serving.knative.dev/revision"
QUEUE_CONTAINER = "queue-proxy"
TICK = 0.25  # probe and reconcile period; kubelet's is 1-10 s, tests want less
MAX_GRACE_SECONDS = 30.0
POD_CIDR = ipaddress.ip_network("127.0.20.0/22")
# The activator Service's target ports in Knative's manifest (name -> port).
ACTIVATOR_PORTS: Mapping[str, int] = {
    "http-metrics": 9090,
    "http-profiling": 8008,
    "http": 8012,
    "http2": 8013,
    "https": 8112,
}

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class QueueProxy:
    """How the node runs a pod's ``queue-proxy`` container.

    ``pod_addressed``: the queue-proxy binds ``SLUICE_BIND_HOST`` and dials the app at
    ``SLUICE_USER_HOST`` (Sluice's), so every pod gets its own address for both containers
    and pods can share port numbers. When false (Knative's Go queue binds all addresses and
    dials the app at 127.0.0.1) the app is told to bind 127.0.0.1 and only one pod can run
    at a time.
    """

    name: str
    argv: tuple[str, ...]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    pod_addressed: bool = True

    @classmethod
    def go(cls, binary: Path) -> QueueProxy:
        """Knative's Go ``queue`` (``tests/kube/peers/bin/queue``)."""
        return cls("go", (str(binary),), pod_addressed=False)

    @classmethod
    def sluice(cls, **extra_env: str) -> QueueProxy:
        """Sluice's ``python -m queueproxy`` with this interpreter."""
        return cls("sluice", (sys.executable, "-m", "queueproxy"), extra_env)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(eq=False)
class _Container:
    name: str
    image: str
    argv: tuple[str, ...] | None
    env: dict[str, str]
    probe: Mapping[str, Any] | None
    ports: Mapping[str, int]
    proc: Proc | None = None
    started_at: str = ""
    restarts: int = 0
    restart_at: float = 0.0
    ready: bool = False
    failures: int = 0
    last_exit: int | None = None
    last_message: str = ""
    waiting: str = ""
    waiting_message: str = ""


@dataclass(eq=False)
class _Pod:
    name: str
    namespace: str
    uid: str
    ip: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: Obj
    owner: tuple[str, str]
    hash: str
    created_at: str
    containers: list[_Container]
    terminating: bool = False
    written: str = ""

    def view(self) -> PodView:
        cviews = tuple(
            ContainerView(
                name=c.name,
                image=c.image,
                running=c.proc is not None,
                ready=c.ready and c.proc is not None,
                started_at=c.started_at,
                restarts=c.restarts,
                waiting_reason=c.waiting,
                waiting_message=c.waiting_message,
                last_exit_code=c.last_exit,
                last_exit_message=c.last_message,
            )
            for c in self.containers
        )
        return PodView(
            name=self.name,
            namespace=self.namespace,
            uid=self.uid,
            ip=self.ip,
            labels=self.labels,
            containers=cviews,
            ready=not self.terminating and all(c.ready for c in cviews),
            terminating=self.terminating,
            template_hash=self.hash,
            created_at=self.created_at,
            spec=self.spec,
        )


class FakeNode:
    """Plays kubelet and the workload/endpoints controllers; see the module docstring."""

    def __init__(
        self,
        api: KubeApi,
        workdir: Path,
        queue_proxy: QueueProxy,
        apps: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.api = api
        self.queue_proxy = queue_proxy
        self.apps: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (apps or {}).items()}
        self.supervisor = Supervisor(workdir / "pods")
        self.pod_log_dir = workdir / "pods"
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deployments: dict[tuple[str, str], Obj] = {}
        self._services: dict[tuple[str, str], Obj] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._replicasets: dict[tuple[str, str], Obj] = {}  # deployment -> current RS
        self._written: dict[tuple[str, ...], str] = {}  # last status/endpoints signature
        self._progress: dict[tuple[str, str], tuple[int, float]] = {}
        self._ips_in_use: set[str] = set()
        self._next_ip = 1
        self._changed = threading.Condition()
        self._snapshot: tuple[PodView, ...] = ()
        self.errors: list[str] = []
        self._queue_proxies: dict[str, QueueProxy] = {}
        self._evicted: set[str] = set()

    # -- public ---------------------------------------------------------------------------

    def start(self) -> None:
        for kind, selector in (("Deployment", REVISION_LABEL), ("Service", None)):
            t = threading.Thread(
                target=self._watch,
                args=(kind, selector),
                name=f"fake-node-watch-{kind}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)
        worker = threading.Thread(target=self._work, name="fake-node-worker", daemon=True)
        worker.start()
        self._threads.append(worker)

    def stop(self) -> None:
        """Stop every pod's processes (SIGTERM, short grace, SIGKILL) and the threads."""
        self._stop.set()
        self._events.put(("stop", None))
        for t in self._threads:
            if t.name == "fake-node-worker":
                t.join(timeout=5)
        self.supervisor.stop_all(5.0)

    def set_queue_proxy(self, namespace: str, queue_proxy: QueueProxy) -> None:
        """Pods created from now on in ``namespace`` run ``queue_proxy``."""
        self._queue_proxies[namespace] = queue_proxy

    def evict_namespace(self, namespace: str, grace: float = 2.0, timeout: float = 30.0) -> None:
        """Stop running ``namespace``'s pods (SIGTERM, SIGKILL after ``grace`` s), wait until
        they are gone, and ignore its Deployments from now on.

        There is no garbage collector to delete a finished test's Deployments, and a pod left
        running would hold its ports (Go's queue-proxy binds every address) for the rest of
        the session; ``kube_namespace`` calls this when a test that used the node ends.
        """
        self._events.put(("evict", (namespace, grace)))
        self.wait_for_pods(
            lambda ps: not any(p.namespace == namespace for p in ps),
            timeout,
            f"namespace {namespace} evicted",
        )

    def register_app(self, image: str, argv: Sequence[str]) -> None:
        """Run containers whose image is ``image`` as ``argv`` (cwd: the repository root)."""
        self.apps[image] = tuple(argv)

    def set_activator_endpoints(
        self, ips: Sequence[str], ports: Mapping[str, int] = ACTIVATOR_PORTS
    ) -> None:
        """Write knative-serving/activator-service Endpoints: ``ips`` ready on ``ports``."""
        subsets = []
        if ips:
            subsets = [
                {
                    "addresses": [{"ip": ip} for ip in ips],
                    "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports.items()],
                }
            ]
        self._put_endpoints("knative-serving", "activator-service", {"app": "activator"}, subsets)

    def pods(self, namespace: str | None = None, revision: str | None = None) -> list[PodView]:
        """The node's pods (terminating ones included), optionally of one revision."""
        with self._changed:
            views = self._snapshot
        return [
            v
            for v in views
            if (namespace is None or v.namespace == namespace)
            and (revision is None or v.labels.get(REVISION_LABEL) == revision)
        ]

    def wait_for_pods(
        self, predicate: Callable[[list[PodView]], bool], timeout: float, what: str = "pods"
    ) -> list[PodView]:
        """Block until ``predicate(self.pods())`` holds; TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                views = list(self._snapshot)
                if predicate(views):
                    return views
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake node: {what} not reached in {timeout:.0f}s: {views}")
                self._changed.wait(min(left, 1.0))

    def pod_logs(self, pod: str) -> dict[str, Path]:
        """Log file of each container of ``pod`` (by container name)."""
        return {
            p.name.split("/", 1)[1]: p.log
            for p in self.supervisor.procs
            if p.name.startswith(pod + "/")
        }

    def log_tails(self, lines: int = 20) -> str:
        parts = [f"fake node errors: {self.errors[-5:]}"] if self.errors else []
        for log in sorted(self.pod_log_dir.glob("*.log")):
            parts.append(f"----- {log.name}\n{tail(log, lines)}")
        return "\n".join(parts)

    # -- watches --------------------------------------------------------------------------

    def _watch(self, kind: str, selector: str | None) -> None:
        while not self._stop.is_set():
            try:
                listed = self.api.list(kind, None, selector)
                for item in listed["items"]:  # a List's items carry no kind/apiVersion
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", "apps/v1" if kind == "Deployment" else "v1")
                self._events.put((f"{kind}-sync", listed["items"]))
                version = listed["metadata"]["resourceVersion"]
                for event in self.api.watch(kind, None, selector, version, timeout_seconds=60):
                    if self._stop.is_set():
                        return
                    if event["type"] == "ERROR":
                        break  # 410 Gone and friends: list again
                    if event["type"] != "BOOKMARK":
                        self._events.put((kind, event))
            except (OSError, ApiError, ValueError) as err:
                if not self._stop.is_set():
                    self._note(f"watch {kind}: {err}")
                    time.sleep(0.5)

    # -- worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                item: tuple[str, Any] | None = self._events.get(timeout=TICK)
            except queue.Empty:
                item = None
            while item is not None:
                self._apply(*item)
                try:
                    item = self._events.get_nowait()
                except queue.Empty:
                    item = None
            if self._stop.is_set():
                break
            try:
                self._reconcile()
            except Exception as err:  # keep the node alive; the test sees the error in logs
                self._note(f"reconcile: {type(err).__name__}: {err}")
        for pod in list(self._pods.values()):
            for c in pod.containers:
                if c.proc is not None:
                    c.proc.stop(2.0)

    def _note(self, error: str) -> None:
        self.errors.append(error)
        del self.errors[:-50]

    def _apply(self, kind: str, payload: Any) -> None:
        if kind in ("Deployment-sync", "Service-sync"):
            target = self._deployments if kind == "Deployment-sync" else self._services
            target.clear()
            for obj in payload:
                target[_key(obj)] = obj
        elif kind in ("Deployment", "Service"):
            target = self._deployments if kind == "Deployment" else self._services
            obj = payload["object"]
            if payload["type"] == "DELETED":
                target.pop(_key(obj), None)
            else:
                target[_key(obj)] = obj
        elif kind == "evict":
            namespace, grace = payload
            self._evicted.add(namespace)
            for running in list(self._pods.values()):
                if running.namespace == namespace and not running.terminating:
                    self._terminate(running, grace)
        elif kind == "gone":
            pod = self._pods.pop(payload, None)
            if pod is not None:
                with contextlib.suppress(ApiError):
                    self.api.delete("Pod", pod.namespace, pod.name, grace=0)
                self._ips_in_use.discard(pod.ip)

    def _reconcile(self) -> None:
        # One object's failure (a 422, a bad env reference) must not stall the others: each
        # step is guarded, and the error is kept for the failing test's report.
        for key, deployment in list(self._deployments.items()):
            self._guard(f"deployment {key}", self._sync_deployment, key, deployment)
        for pod in list(self._pods.values()):
            if pod.owner not in self._deployments and not pod.terminating:
                self._guard(f"pod {pod.name}", self._terminate, pod)
        for pod in list(self._pods.values()):
            if not pod.terminating:
                self._tend(pod)
        views = [p.view() for p in self._pods.values()]
        for pod in list(self._pods.values()):
            self._guard(f"pod {pod.name} status", self._write_pod_status, pod)
        for key, deployment in list(self._deployments.items()):
            self._guard(
                f"deployment {key} status", self._write_deployment_status, key, deployment, views
            )
        for key, service in list(self._services.items()):
            if service["spec"].get("selector"):
                subsets = endpoints_subsets(service, views)
                labels = dict(service["metadata"].get("labels", {}))
                self._guard(
                    f"endpoints {key}", self._put_endpoints, key[0], key[1], labels, subsets
                )
        with self._changed:
            self._snapshot = tuple(views)
            self._changed.notify_all()

    def _guard(self, what: str, step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except (ApiError, OSError, ValueError, KeyError) as err:
            self._note(f"{what}: {type(err).__name__}: {err}")

    # -- deployments and pods -------------------------------------------------------------

    def _sync_deployment(self, key: tuple[str, str], deployment: Obj) -> None:
        if key[0] in self._evicted:
            return
        hash_ = template_hash(deployment["spec"]["template"])
        wanted = make_replicaset(deployment, hash_)
        name = wanted["metadata"]["name"]
        rs = self._replicasets.get(key)
        if rs is None or rs["metadata"]["name"] != name:
            try:
                rs = self.api.create(wanted)
            except ApiError as err:
                if err.status != 409:
                    raise
                rs = self.api.get("ReplicaSet", key[0], name)
            self._replicasets[key] = rs
        desired = int(deployment["spec"].get("replicas", 1))
        mine = [p for p in self._pods.values() if p.owner == key and not p.terminating]
        current = [p for p in mine if p.hash == hash_]
        for _ in range(desired - len(current)):
            current.append(self._create_pod(key, rs, hash_))
        if len(current) > desired:
            # As the ReplicaSet controller: unready first, then the newest.
            surplus = sorted(current, key=lambda p: (p.view().ready, p.created_at, p.name))
            for pod in surplus[: len(current) - desired]:
                self._terminate(pod)
        ready_current = sum(1 for p in current if p.view().ready)
        if ready_current >= desired:
            for pod in mine:
                if pod.hash != hash_:
                    self._terminate(pod)

    def _allocate_ip(self) -> str:
        hosts = POD_CIDR.num_addresses - 2
        for _ in range(hosts):
            ip = str(POD_CIDR.network_address + self._next_ip)
            self._next_ip = self._next_ip % hosts + 1
            if ip not in self._ips_in_use:
                self._ips_in_use.add(ip)
                return ip
        raise RuntimeError(f"fake node: no free address left in {POD_CIDR}")

    def _create_pod(self, owner: tuple[str, str], rs: Obj, hash_: str) -> _Pod:
        name = f"{rs['metadata']['name']}-{secrets.token_hex(3)[:5]}"
        created = self.api.create(make_pod(rs, name))
        meta = created["metadata"]
        ip = self._allocate_ip()
        pod = _Pod(
            name=name,
            namespace=meta["namespace"],
            uid=meta["uid"],
            ip=ip,
            labels=dict(meta.get("labels", {})),
            annotations=dict(meta.get("annotations", {})),
            spec=created["spec"],
            owner=owner,
            hash=hash_,
            created_at=meta.get("creationTimestamp", _now()),
            containers=[],
        )
        view = pod.view()
        qp = self._queue_proxies.get(pod.namespace, self.queue_proxy)
        for spec in created["spec"].get("containers", []):
            argv: tuple[str, ...] | None
            try:
                env = container_env(spec, view, pod.annotations)
            except ValueError as err:  # kubelet: CreateContainerConfigError
                env, config_error = {}, str(err)
            else:
                config_error = ""
            env["SLUICE_POD_IP"] = ip
            if config_error:
                argv = None
            elif spec["name"] == QUEUE_CONTAINER:
                argv = qp.argv
                env.update(SLUICE_BIND_HOST=ip, SLUICE_USER_HOST=ip, **qp.extra_env)
            else:
                argv = self._app_for(spec.get("image", ""))
                env["SLUICE_BIND_HOST"] = ip if qp.pod_addressed else "127.0.0.1"
            ports = {
                p["name"]: int(p["containerPort"]) for p in spec.get("ports", []) if p.get("name")
            }
            container = _Container(
                spec["name"], spec.get("image", ""), argv, env, spec.get("readinessProbe"), ports
            )
            if config_error:
                container.waiting = "CreateContainerConfigError"
                container.waiting_message = config_error
            elif argv is None:
                container.waiting = "ErrImagePull"
                container.waiting_message = (
                    f"fake node has no command for image {container.image!r}"
                )
            pod.containers.append(container)
        self._pods[(pod.namespace, pod.name)] = pod
        for container in pod.containers:
            self._start_container(pod, container)
        return pod

    def _app_for(self, image: str) -> tuple[str, ...] | None:
        for candidate in (image, image.split("@", 1)[0], image.split("@", 1)[0].rsplit(":", 1)[0]):
            if candidate in self.apps:
                return self.apps[candidate]
        return None

    def _start_container(self, pod: _Pod, c: _Container) -> None:
        if c.argv is None:
            return
        c.proc = self.supervisor.start(
            f"{pod.name}/{c.name}",
            c.argv,
            base_env(**c.env),
            cwd=ROOT,
            log_name=f"{pod.name}.{c.name}",
        )
        c.started_at = _now()
        c.ready = False
        c.failures = 0
        c.waiting = ""

    def _tend(self, pod: _Pod) -> None:
        """Restart exited containers (with backoff) and run readiness probes."""
        for c in pod.containers:
            if c.proc is not None and not c.proc.alive():
                c.last_exit = c.proc.popen.returncode
                c.last_message = tail(c.proc.log, 1)[-200:]
                self.supervisor.forget(c.proc)
                c.proc = None
                c.ready = False
                c.restarts += 1
                c.restart_at = time.monotonic() + min(10.0, 2.0 ** (c.restarts - 1))
                c.waiting = "CrashLoopBackOff"
            if c.proc is None and c.argv is not None and time.monotonic() >= c.restart_at:
                self._start_container(pod, c)
            if c.proc is not None:
                self._probe(pod, c)

    def _probe(self, pod: _Pod, c: _Container) -> None:
        probe = c.probe or {}
        threshold = int(probe.get("failureThreshold", 3))
        timeout = float(probe.get("timeoutSeconds", 1))
        port = _port((probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port", 0), c.ports)
        if port == 0 and c.name != QUEUE_CONTAINER:
            ok = True  # Knative's placeholder probe (port 0) is the queue-proxy's job
        elif "httpGet" in probe:
            ok = _http_probe(pod.ip, probe["httpGet"], c.ports, timeout)
        elif "tcpSocket" in probe:
            ok = _tcp_probe(pod.ip, probe["tcpSocket"], c.ports, timeout)
        elif c.name == QUEUE_CONTAINER and probe:
            # Older Knative probes the queue-proxy with exec; ask it over HTTP the same way.
            ok = _http_probe(
                pod.ip,
                {"port": 8012, "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]},
                {},
                timeout,
            )
        else:
            ok = True  # no probe, exec or grpc: ready while running
        if ok:
            c.ready, c.failures = True, 0
        else:
            c.failures += 1
            if c.failures >= threshold:
                c.ready = False

    def _terminate(self, pod: _Pod, grace_cap: float = MAX_GRACE_SECONDS) -> None:
        pod.terminating = True
        grace = min(float(pod.spec.get("terminationGracePeriodSeconds", 30)), grace_cap)
        with contextlib.suppress(ApiError):
            self.api.delete("Pod", pod.namespace, pod.name, grace=int(grace))
        procs = [c.proc for c in pod.containers if c.proc is not None]
        key = (pod.namespace, pod.name)

        def kill() -> None:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    proc.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for proc in procs:
                proc.stop(max(0.0, deadline - time.monotonic()))
                self.supervisor.forget(proc)
            self._events.put(("gone", key))

        threading.Thread(target=kill, name=f"fake-node-kill-{pod.name}", daemon=True).start()

    # -- writes ---------------------------------------------------------------------------

    def _write_pod_status(self, pod: _Pod) -> None:
        view = pod.view()
        signature = json.dumps(pod_status(view, ""), sort_keys=True)
        if signature == pod.written:
            return
        try:
            self.api.patch(
                "Pod",
                pod.namespace,
                pod.name,
                {"status": pod_status(view, _now())},
                subresource="status",
            )
            pod.written = signature
        except ApiError as err:
            if err.status != 404:
                raise

    def _write_deployment_status(
        self, key: tuple[str, str], deployment: Obj, views: list[PodView]
    ) -> None:
        pods = [
            v
            for v in views
            if self._pods.get((v.namespace, v.name))
            and self._pods[(v.namespace, v.name)].owner == key
        ]
        desired = int(deployment["spec"].get("replicas", 1))
        ready = sum(1 for v in pods if v.ready and not v.terminating)
        last_ready, since = self._progress.get(key, (-1, time.monotonic()))
        if ready != last_ready or ready >= desired:
            since = time.monotonic()
        self._progress[key] = (ready, since)
        deadline = float(deployment["spec"].get("progressDeadlineSeconds", 600))
        stalled = time.monotonic() - since > deadline
        hash_ = template_hash(deployment["spec"]["template"])
        status = deployment_status(deployment, pods, hash_, stalled, "")
        signature = json.dumps([deployment["metadata"].get("generation"), status], sort_keys=True)
        if self._written.get(("Deployment", *key)) == signature:
            return
        status = deployment_status(deployment, pods, hash_, stalled, _now())
        try:
            self.api.patch("Deployment", key[0], key[1], {"status": status}, subresource="status")
            rs = self._replicasets.get(key)
            if rs is not None:
                rs_name = rs["metadata"]["name"]
                current = [v for v in pods if v.template_hash == hash_ and not v.terminating]
                rs_status = {
                    "replicas": len(current),
                    "readyReplicas": sum(1 for v in current if v.ready),
                    "availableReplicas": sum(1 for v in current if v.ready),
                    "observedGeneration": 1,
                }
                self.api.patch(
                    "ReplicaSet", key[0], rs_name, {"status": rs_status}, subresource="status"
                )
            self._written[("Deployment", *key)] = signature
        except ApiError as err:
            if err.status != 404:
                raise

    def _put_endpoints(
        self, namespace: str, name: str, labels: Mapping[str, str], subsets: list[Obj]
    ) -> None:
        signature = json.dumps([labels, subsets], sort_keys=True)
        if self._written.get(("Endpoints", namespace, name)) == signature:
            return
        current = self.api.get_or_none("Endpoints", namespace, name)
        try:
            if current is None:
                self.api.create(
                    {
                        "apiVersion": "v1",
                        "kind": "Endpoints",
                        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
                        "subsets": subsets,
                    }
                )
            else:
                current["metadata"]["labels"] = {**current["metadata"].get("labels", {}), **labels}
                current["subsets"] = subsets
                self.api.update(current)
        except ApiError as err:
            if err.status in (404, 409):
                return  # raced with a writer or a deletion: the next tick retries
            raise
        self._written[("Endpoints", namespace, name)] = signature


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return (obj["metadata"]["namespace"], obj["metadata"]["name"])


def _port(value: Any, ports: Mapping[str, int]) -> int:
    """A probe's port number; 0 when unset or naming no port of the container."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    return ports.get(str(value), 0)


def _http_probe(ip: str, spec: Mapping[str, Any], ports: Mapping[str, int], timeout: float) -> bool:
    host = spec.get("host") or ip
    conn = http.client.HTTPConnection(host, _port(spec["port"], ports), timeout=timeout)
    headers = {"User-Agent": "kube-probe/1.35"}
    headers.update({h["name"]: h["value"] for h in spec.get("httpHeaders", [])})
    try:
        conn.request("GET", spec.get("path") or "/", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return 200 <= resp.status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _tcp_probe(ip: str, spec: Mapping[str, Any], ports: Mapping[str, int], timeout: float) -> bool:
    try:
        with socket.create_connection(
            (spec.get("host") or ip, _port(spec["port"], ports)), timeout=timeout
        ):
            return True
    except OSError:
        return False
