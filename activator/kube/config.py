"""Where the Kubernetes API is and how to authenticate to it: ``KubeConfig``.

Two ways to build one, as client-go does:

* ``KubeConfig.in_cluster(env)``: ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` and
  the service-account files under ``/var/run/secrets/kubernetes.io/serviceaccount``. The token
  is kept as a *file* because projected tokens rotate; ``auth.TokenSource`` re-reads it.
* ``KubeConfig.from_kubeconfig(path, context)``: a kubeconfig file's current (or named)
  context. Static credentials only: a user with ``exec`` or ``auth-provider`` is refused, since
  running credential plugins is not a data plane's business.

``KubeConfig.from_env(env)`` picks in-cluster when ``KUBERNETES_SERVICE_HOST`` is set, else
``$KUBECONFIG`` (its first path), else ``~/.kube/config``.

Every error is a ``KubeConfigError`` of one line naming the variable, field or file.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

__all__ = ["SERVICE_ACCOUNT_DIR", "KubeConfig", "KubeConfigError"]

#: Where the kubelet mounts a pod's service-account token, CA bundle and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(ValueError):
    """The configuration cannot be used; the message is one line naming what is wrong."""


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """How to reach and authenticate to one API server. Paths are absolute once built."""

    #: ``https://host:port`` (or ``http://`` for a local test server), no trailing slash.
    server: str
    ca_file: str | None = None
    #: PEM text of the CA bundle (kubeconfig ``certificate-authority-data``, decoded).
    ca_data: str | None = None
    insecure_skip_tls_verify: bool = False
    #: A static bearer token; ``token_file`` wins when both are set (client-go does the same).
    token: str | None = field(default=None, repr=False)  # a secret: never in logs
    #: A bearer token file, re-read periodically (projected tokens rotate).
    token_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = None
    client_key_data: bytes | None = field(default=None, repr=False)
    #: SNI and certificate name to expect instead of the server URL's host.
    tls_server_name: str | None = None
    #: The namespace of the service account or the kubeconfig context, if known.
    namespace: str | None = None
    #: Who we are, for error messages ("as system:serviceaccount:ns:name"), if known.
    identity: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise KubeConfigError(f"server: expected an http(s) URL, got {self.server!r}")
        if self.server.endswith("/"):
            object.__setattr__(self, "server", self.server.rstrip("/"))
        if (self.client_cert_file or self.client_cert_data) and not (
            self.client_key_file or self.client_key_data
        ):
            raise KubeConfigError("client-key: a client certificate needs its key")

    @property
    def uses_tls(self) -> bool:
        return self.server.startswith("https://")

    @classmethod
    def in_cluster(
        cls, env: Mapping[str, str] | None = None, root: Path = SERVICE_ACCOUNT_DIR
    ) -> KubeConfig:
        """The pod's own service account; ``root`` is injectable for tests."""
        env = os.environ if env is None else env
        host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
        port = env.get("KUBERNETES_SERVICE_PORT", "").strip()
        if not host:
            raise KubeConfigError("KUBERNETES_SERVICE_HOST: not set (not running in a pod?)")
        if not port:
            raise KubeConfigError("KUBERNETES_SERVICE_PORT: not set (not running in a pod?)")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise KubeConfigError(f"KUBERNETES_SERVICE_PORT: not a port number: {port!r}")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        token = root / "token"
        ca = root / "ca.crt"
        for path in (token, ca):
            if not os.access(path, os.R_OK):
                raise KubeConfigError(f"{path}: cannot read the service-account file")
        ns_file = root / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else None
        return cls(
            server=f"https://{host}:{port}",
            ca_file=str(ca),
            token_file=str(token),
            namespace=namespace or None,
        )

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None) -> KubeConfig:
        """The named context of a kubeconfig file, else its ``current-context``."""
        path = Path(path).expanduser()
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise KubeConfigError(f"{path}: cannot read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise KubeConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from exc
        try:
            return _from_document(doc, path.parent.resolve(), context)
        except KubeConfigError as exc:
            raise KubeConfigError(f"{path}: {exc}") from exc

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubeConfig:
        """In-cluster if ``KUBERNETES_SERVICE_HOST`` is set, else ``$KUBECONFIG`` or the default."""
        env = os.environ if env is None else env
        if env.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(env)
        paths = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
        return cls.from_kubeconfig(paths[0] if paths else Path.home() / ".kube" / "config")


def _section(doc: Mapping[str, Any], kind: str, name: str) -> Mapping[str, Any]:
    """The inner mapping of the ``kind`` list entry called ``name`` (``clusters``...)."""
    entries = doc.get(kind) or []
    if not isinstance(entries, list):
        raise KubeConfigError(f"{kind}: expected a list")
    inner = kind[:-1]  # clusters -> cluster
    for i, entry in enumerate(entries):
        if isinstance(entry, Mapping) and entry.get("name") == name:
            body = entry.get(inner) or {}
            if not isinstance(body, Mapping):
                raise KubeConfigError(f"{kind}[{i}].{inner}: expected a mapping")
            return body
    raise KubeConfigError(f"{kind}: no entry named {name!r}")


def _file(value: object, name: str, base: Path) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise KubeConfigError(f"{name}: expected a file path")
    path = (base / Path(value).expanduser()).resolve()
    if not os.access(path, os.R_OK):
        raise KubeConfigError(f"{name}: cannot read {path}")
    return str(path)


def _b64(value: object, name: str) -> bytes | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise KubeConfigError(f"{name}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KubeConfigError(f"{name}: invalid base64: {exc}") from exc


def _from_document(doc: object, base: Path, context: str | None) -> KubeConfig:
    if not isinstance(doc, Mapping):
        raise KubeConfigError("expected a kubeconfig mapping at the top level")
    name = context or doc.get("current-context")
    if not name or not isinstance(name, str):
        raise KubeConfigError("current-context: not set and no context given")
    ctx = _section(doc, "contexts", name)
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if not isinstance(cluster_name, str) or not cluster_name:
        raise KubeConfigError(f"contexts[{name}].cluster: missing")
    cluster = _section(doc, "clusters", cluster_name)
    user: Mapping[str, Any] = {}
    if isinstance(user_name, str) and user_name:
        user = _section(doc, "users", user_name)
    where = f"users[{user_name}].user"
    for refused in ("exec", "auth-provider"):
        if user.get(refused):
            raise KubeConfigError(
                f"{where}.{refused}: credential plugins are not supported; "
                "use a token, tokenFile or client certificate"
            )
    if user.get("username") or user.get("password"):
        raise KubeConfigError(f"{where}.username: basic authentication is not supported")
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"clusters[{cluster_name}].cluster.server: missing")
    cwhere = f"clusters[{cluster_name}].cluster"
    ca_data = _b64(
        cluster.get("certificate-authority-data"), f"{cwhere}.certificate-authority-data"
    )
    token = user.get("token")
    if token is not None and not isinstance(token, str):
        raise KubeConfigError(f"{where}.token: expected a string")
    namespace = ctx.get("namespace")
    try:
        return KubeConfig(
            server=server,
            ca_file=_file(
                cluster.get("certificate-authority"), f"{cwhere}.certificate-authority", base
            ),
            ca_data=ca_data.decode("ascii", "replace") if ca_data else None,
            insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
            token=token or None,
            token_file=_file(user.get("tokenFile"), f"{where}.tokenFile", base),
            client_cert_file=_file(
                user.get("client-certificate"), f"{where}.client-certificate", base
            ),
            client_key_file=_file(user.get("client-key"), f"{where}.client-key", base),
            client_cert_data=_b64(
                user.get("client-certificate-data"), f"{where}.client-certificate-data"
            ),
            client_key_data=_b64(user.get("client-key-data"), f"{where}.client-key-data"),
            tls_server_name=cluster.get("tls-server-name") or None,
            namespace=namespace if isinstance(namespace, str) and namespace else None,
            identity=None,
        )
    except KubeConfigError as exc:
        msg = str(exc)
        if msg.startswith("server:"):
            raise KubeConfigError(f"{cwhere}.{msg}") from exc
        if msg.startswith("client-key:"):
            raise KubeConfigError(f"{where}.{msg}") from exc
        raise
