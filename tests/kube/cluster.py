"""The real control plane on loopback: etcd, kube-apiserver, Knative's controller and autoscaler.

``KubeCluster.up(workdir)`` starts, in order and each waited for: etcd (client and peer on
free 127.0.0.1 ports, data in ``workdir``), kube-apiserver (RBAC on, a throw-away PKI, an
admin client certificate in ``system:masters``, service-account tokens signed by a key pair of
ours), then applies Knative v1.23.0's namespace, CRDs, RBAC and ConfigMaps from
``../shared/knative/v1.23.0`` (beside the repository) with ``kubectl`` and patches the
ConfigMaps for a fast, registry-free test (:data:`CONFIG_PATCHES`), creates the empty
``activator-service`` Endpoints the SKS reconciler insists on, issues tokens for the
``controller`` and
``activator`` service accounts, and starts Knative's ``controller`` and ``autoscaler``
authenticated as the ``controller`` service account (Knative's own RBAC).

Fixed ports we cannot move: the autoscaler's websocket stat server listens on ``:8080`` (all
addresses; the constant ``statsServerAddr`` in Knative's ``cmd/autoscaler``). The controller's
health-probe server is also fixed at ``:8080``, which is why ``peers/knative/cmd/controller``
wraps Knative's main with the probes disabled. Everything else is on 127.0.0.1 or moved to a
free port (``PROFILING_PORT``). So a test pod's user container must not use port 8080.

``stop()`` (and ``atexit``) stops every process group; the tmp dir is the caller's.
"""

from __future__ import annotations

import base64
import functools
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.kube.api import ApiError, KubeApi, Obj
from tests.kube.pki import Pki, make_pki
from tests.kube.procs import Proc, Supervisor, base_env, tail
from tests.ports import free_port

__all__ = ["CONFIG_PATCHES", "KNATIVE", "PEERS_BIN", "KubeCluster", "PeersMissing", "peer"]

HERE = Path(__file__).resolve().parent
PEERS_BIN = HERE / "peers" / "bin"
#: Knative's release files, test data in the shared folder beside the repository.
KNATIVE = HERE.parents[2] / "shared" / "knative" / "v1.23.0"
SYSTEM_NAMESPACE = "knative-serving"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the ``kubernetes`` Service's ClusterIP: first of SERVICE_CIDR
AUTOSCALER_WS_PORT = 8080  # fixed in Knative's cmd/autoscaler (statsServerAddr ":8080")
REQUIRED_PEERS = ("etcd", "kube-apiserver", "controller", "autoscaler", "queue")
STARTUP_SECONDS = 90.0

# Applied on top of Knative's ConfigMaps (merge patches on ``data``). Why each:
CONFIG_PATCHES: Mapping[str, Mapping[str, str]] = {
    "config-deployment": {
        # The sidecar image is a ko:// placeholder in the shared file; any name works, the fake
        # node runs the queue-proxy command it was given, but digest resolution must skip it.
        "queue-sidecar-image": "dev.local/knative/queue",
        # Never contact a registry: test images are dev.local/... (Knative's default list, kept
        # explicit because the tier depends on it).
        "registries-skipping-tag-resolving": "kind.local,ko.local,dev.local",
        # A pod that never becomes ready fails its Revision in a test's lifetime, not in 10 min.
        "progress-deadline": "60s",
    },
    # A restarted controller (new identity) takes its leases over in seconds, not a minute.
    "config-leader-election": {
        "lease-duration": "15s",
        "renew-deadline": "10s",
        "retry-period": "2s",
    },
    "config-autoscaler": {
        "allow-zero-initial-scale": "true",
        "stable-window": "6s",  # the minimum Knative accepts
        "scale-to-zero-grace-period": "6s",
        "scale-to-zero-pod-retention-period": "0s",
    },
}


class PeersMissing(RuntimeError):
    """The Go peers are not built; the message says how to build them."""


def peer(name: str) -> Path:
    """Path of a built peer binary (``tests/kube/peers/bin/<name>``), or PeersMissing."""
    path = PEERS_BIN / name
    if not path.is_file():
        raise PeersMissing(f"kube tier peer {name!r} is not built: run tests/kube/peers/build.sh")
    return path


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, proc: Proc | None = None
) -> None:
    """Poll ``check`` every 0.2 s until true; fail naming ``what`` (and the dead process)."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{tail(proc.log)}")
        if time.monotonic() > deadline:
            log = f":\n{tail(proc.log)}" if proc is not None else ""
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s{log}")
        time.sleep(0.2)


def _require_free_port(port: int, what: str) -> None:
    """Fail at once, naming the port, if anything listens on ``port`` (any address)."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as err:
            raise RuntimeError(
                f"port {port} ({what}) is busy: {err.strerror}; is another kube-tier session "
                "or a `sluice up` running?"
            ) from None


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _kubeconfig(server: str, ca: Path, name: str, user: Mapping[str, str], namespace: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sluice-kube-tier",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": "sluice-kube-tier", "user": name, "namespace": namespace},
            }
        ],
        "current-context": name,
    }
    return json.dumps(config, indent=1)  # JSON is valid YAML; every client reads it


@dataclass(eq=False)
class KubeCluster:
    """A running control plane. Build with :meth:`up`; always :meth:`stop`."""

    workdir: Path
    supervisor: Supervisor
    pki: Pki
    server_url: str
    admin_kubeconfig: Path
    api: KubeApi
    autoscaler_ws_url: str
    procs: dict[str, Proc] = field(default_factory=dict)
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of every control-plane process, by name."""
        return {name: proc.log for name, proc in self.procs.items()}

    # -- start-up -------------------------------------------------------------------------

    @classmethod
    def up(cls, workdir: Path) -> KubeCluster:
        """Start everything; on any failure stop what was started and re-raise."""
        binaries = {name: peer(name) for name in REQUIRED_PEERS}
        _require_free_port(AUTOSCALER_WS_PORT, "the autoscaler's fixed websocket port")
        supervisor = Supervisor(workdir / "logs")
        try:
            return cls._up(workdir, supervisor, binaries)
        except BaseException:
            supervisor.stop_all(2.0)
            raise

    @classmethod
    def _up(cls, workdir: Path, supervisor: Supervisor, binaries: dict[str, Path]) -> KubeCluster:
        pki = make_pki(workdir / "pki", SERVICE_IP)
        procs: dict[str, Proc] = {}

        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        procs["etcd"] = supervisor.start(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=sluice-test",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=sluice-test=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",  # a test cluster need not survive a power cut
                "--log-level=warn",
            ],
            base_env(),
        )
        wait_until("etcd", lambda: _http_ok(etcd_url + "/health"), 30, procs["etcd"])

        api_port = free_port()
        server_url = f"https://127.0.0.1:{api_port}"
        procs["kube-apiserver"] = supervisor.start(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={workdir / 'pki'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # No kube-controller-manager creates the ``default`` ServiceAccount of a
                # namespace, so the admission plugin would refuse every Pod the node writes.
                "--disable-admission-plugins=ServiceAccount",
                "--profiling=false",
                "--v=1",
            ],
            base_env(),
        )
        admin = KubeApi(server_url, pki.ca_cert, pki.admin_cert, pki.admin_key)
        wait_until(
            "kube-apiserver /readyz",
            lambda: _api_ok(admin, "/readyz"),
            STARTUP_SECONDS,
            procs["kube-apiserver"],
        )

        admin_kubeconfig = workdir / "admin.kubeconfig"
        admin_kubeconfig.write_text(
            _kubeconfig(
                server_url,
                pki.ca_cert,
                "admin",
                {
                    "client-certificate": str(pki.admin_cert),
                    "client-key": str(pki.admin_key),
                },
                "default",
            )
        )
        cluster = cls(
            workdir=workdir,
            supervisor=supervisor,
            pki=pki,
            server_url=server_url,
            admin_kubeconfig=admin_kubeconfig,
            api=admin,
            autoscaler_ws_url=f"ws://127.0.0.1:{AUTOSCALER_WS_PORT}",
            procs=procs,
        )
        cluster._install_knative()
        cluster._start_knative(binaries)
        return cluster

    def _install_knative(self) -> None:
        k = KNATIVE
        self.kubectl("apply", "-f", str(k / "100-namespace.yaml"))
        self.kubectl(
            "apply",
            "-f", str(k / "300-resources"),
            "-f", str(k / "300-imagecache.yaml"),
        )  # fmt: skip
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        self.kubectl(
            "apply",
            "-f", str(k / "200-serviceaccount.yaml"),
            "-f", str(k / "200-roles"),
            "-f", str(k / "configmaps"),
        )  # fmt: skip
        self._aggregate_cluster_roles()
        for name, data in CONFIG_PATCHES.items():
            self.api.patch("ConfigMap", SYSTEM_NAMESPACE, name, {"data": dict(data)})
        # The SKS reconciler fails every reconcile until this exists (it reads the activator's
        # Endpoints to decide proxy mode); the fake node fills it when a test registers one.
        self.api.create(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "activator-service", "namespace": SYSTEM_NAMESPACE},
            }
        )

    def _aggregate_cluster_roles(self) -> None:
        """Fill ClusterRoles that have an ``aggregationRule``, once.

        kube-controller-manager's clusterrole-aggregation controller does this in a real
        cluster; without it ``knative-serving-admin`` (the controller's role, aggregated from
        every ClusterRole labelled ``serving.knative.dev/controller: "true"``) grants nothing.
        """
        roles = self.api.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles")["items"]
        for role in roles:
            selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
            if not selectors:
                continue
            rules: list[Obj] = []
            for other in roles:
                if other is role or other.get("aggregationRule"):
                    continue
                labels = other["metadata"].get("labels") or {}
                if any(_matches(sel, labels) for sel in selectors):
                    rules.extend(r for r in other.get("rules") or [] if r not in rules)
            path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/" + role["metadata"]["name"]
            self.api.request(
                "PATCH", path, {"rules": rules}, content_type="application/merge-patch+json"
            )

    def _start_knative(self, binaries: dict[str, Path]) -> None:
        kubeconfig = self.kubeconfig_for("controller")
        common = {
            "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
            "CONFIG_LOGGING_NAME": "config-logging",
            "CONFIG_OBSERVABILITY_NAME": "config-observability",
        }
        self.procs["controller"] = self.supervisor.start(
            "controller",
            [str(binaries["controller"]), f"--kubeconfig={kubeconfig}"],
            base_env(
                **common,
                POD_NAME="controller-sluice-test",
                PROFILING_PORT=str(free_port()),
            ),
        )
        self.procs["autoscaler"] = self.supervisor.start(
            "autoscaler",
            [str(binaries["autoscaler"]), f"--kubeconfig={kubeconfig}"],
            base_env(
                **common,
                POD_NAME="autoscaler-sluice-test",
                POD_IP="127.0.0.1",
                PROFILING_PORT=str(free_port()),
            ),
        )
        wait_until(
            "autoscaler websocket :8080",
            lambda: _tcp_open("127.0.0.1", AUTOSCALER_WS_PORT),
            STARTUP_SECONDS,
            self.procs["autoscaler"],
        )
        # Lease names: the controller's reconcilers ``controller.<queue>.00-of-01``; the
        # autoscaler's shared elector ``autoscaler-bucket-00-of-01``.
        for component, prefix in (
            ("controller", "controller."),
            ("autoscaler", "autoscaler-bucket-"),
        ):
            wait_until(
                f"{component} leader leases",
                functools.partial(self._holds_leases, prefix),
                STARTUP_SECONDS,
                self.procs[component],
            )

    def restart(self, name: str, down_seconds: float = 0.0) -> None:
        """Restart control-plane process ``name`` (etcd, kube-apiserver, controller,
        autoscaler): SIGTERM (SIGKILL after 10 s), ``down_seconds`` of outage, start with
        the same flags, env and ports, and return once it serves again (etcd ``/health``,
        API server ``/readyz``, the autoscaler's websocket port; the controller once its
        leases have a holder)."""
        proc = self.supervisor.restart(self.procs[name], down_seconds)
        self.procs[name] = proc
        if name == "etcd":
            url = next(a for a in proc.argv if a.startswith("--listen-client-urls="))
            wait_until("etcd", lambda: _http_ok(url.split("=", 1)[1] + "/health"), 30, proc)
        elif name == "kube-apiserver":
            wait_until(
                "kube-apiserver /readyz",
                lambda: _api_ok(self.api, "/readyz"),
                STARTUP_SECONDS,
                proc,
            )
        elif name == "autoscaler":
            wait_until(
                "autoscaler websocket :8080",
                lambda: _tcp_open("127.0.0.1", AUTOSCALER_WS_PORT),
                STARTUP_SECONDS,
                proc,
            )
        elif name == "controller":
            wait_until(
                "controller leader leases",
                functools.partial(self._holds_leases, "controller."),
                STARTUP_SECONDS,
                proc,
            )

    def _holds_leases(self, name_prefix: str) -> bool:
        """Some lease named ``name_prefix...`` exists and every such lease has a holder.

        The holder is ``<hostname>_<uuid>`` (or the autoscaler's ``POD_NAME_POD_IP``), so the
        name, not the holder, tells the components apart.
        """
        leases = [
            lease
            for lease in self.api.list("Lease", SYSTEM_NAMESPACE)["items"]
            if lease["metadata"]["name"].startswith(name_prefix)
        ]
        return bool(leases) and all(lease.get("spec", {}).get("holderIdentity") for lease in leases)

    # -- identities -----------------------------------------------------------------------

    def token_for(self, sa: str, namespace: str = SYSTEM_NAMESPACE) -> str:
        """A bound token (TokenRequest API, 24 h) for service account ``namespace/sa``."""
        key = (namespace, sa)
        if key not in self._tokens:
            self._tokens[key] = self.kubectl(
                "create", "token", sa, "-n", namespace, "--duration=24h"
            ).strip()
        return self._tokens[key]

    def kubeconfig_for(self, sa: str, namespace: str = SYSTEM_NAMESPACE) -> Path:
        """A kubeconfig authenticating as service account ``namespace/sa`` with a bearer token."""
        path = self.workdir / f"{namespace}.{sa}.kubeconfig"
        if not path.exists():
            user = {"token": self.token_for(sa, namespace)}
            path.write_text(_kubeconfig(self.server_url, self.pki.ca_cert, sa, user, namespace))
        return path

    def api_for(self, sa: str, namespace: str = SYSTEM_NAMESPACE) -> KubeApi:
        """A :class:`KubeApi` acting as service account ``namespace/sa``."""
        return KubeApi(self.server_url, self.pki.ca_cert, token=self.token_for(sa, namespace))

    # -- tools ----------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run ``kubectl`` as admin; stdout, or RuntimeError naming the command and its error."""
        done = subprocess.run(
            ["kubectl", f"--kubeconfig={self.admin_kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            error = done.stderr.strip().replace("\n", " | ")
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {error}")
        return done.stdout

    def wait_for(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        predicate: Callable[[Obj], bool],
        timeout: float,
        what: str = "",
    ) -> Obj:
        """Poll the object every 0.2 s until ``predicate(obj)``; TimeoutError with its status."""
        deadline = time.monotonic() + timeout
        obj: Obj | None = None
        while time.monotonic() < deadline:
            obj = self.api.get_or_none(kind, namespace, name)
            if obj is not None and predicate(obj):
                return obj
            time.sleep(0.2)
        status = json.dumps((obj or {}).get("status", "absent"))[:2000]
        raise TimeoutError(
            f"{kind} {namespace}/{name} {what or 'condition'} not met in {timeout:.0f}s: {status}"
        )

    def log_tails(self, lines: int = 30) -> str:
        """The tail of every control-plane log, for a failing test's report."""
        parts = []
        for name, proc in self.procs.items():
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"----- {name} ({state}) {proc.log}\n{tail(proc.log, lines)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop Knative's processes, then the API server, then etcd."""
        self.supervisor.stop_all()


def _matches(selector: Mapping[str, object], labels: Mapping[str, str]) -> bool:
    """A label selector with ``matchLabels`` and ``In``/``Exists`` expressions."""
    match_labels = selector.get("matchLabels") or {}
    assert isinstance(match_labels, dict)
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions") or []:  # type: ignore[attr-defined]
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "Exists" and key not in labels):
            return False
        if (op == "NotIn" and labels.get(key) in values) or (
            op == "DoesNotExist" and key in labels
        ):
            return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _api_ok(api: KubeApi, path: str) -> bool:
    try:
        api.raw(path)
    except (OSError, ApiError):
        return False
    return True
