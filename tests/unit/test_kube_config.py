"""KubeConfig (in-cluster and kubeconfig), the re-reading token source, TLS, back-off."""

from __future__ import annotations

import base64
import json
import logging
import random
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from activator.kube.auth import TokenSource, identity_from_token, ssl_context
from activator.kube.config import KubeConfig, KubeConfigError
from activator.kube.reflector import Backoff

SA = "system:serviceaccount:knative-serving:activator"


def jwt(sub: str) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': sub, 'iss': 'kubernetes'})}.c2ln"


@pytest.fixture
def sa_root(tmp_path: Path) -> Path:
    root = tmp_path / "serviceaccount"
    root.mkdir()
    (root / "token").write_text(jwt(SA))
    (root / "ca.crt").write_text("not read here\n")
    (root / "namespace").write_text("knative-serving")
    return root


ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


# -- in-cluster ----------------------------------------------------------------------------


def test_in_cluster_uses_service_env_and_account_files(sa_root: Path) -> None:
    cfg = KubeConfig.in_cluster(ENV, root=sa_root)
    assert cfg.server == "https://10.96.0.1:443"
    assert cfg.token_file == str(sa_root / "token")
    assert cfg.ca_file == str(sa_root / "ca.crt")
    assert cfg.namespace == "knative-serving"
    assert cfg.token is None


def test_in_cluster_brackets_an_ipv6_host(sa_root: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert KubeConfig.in_cluster(env, root=sa_root).server == "https://[fd00:10:96::1]:443"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KUBERNETES_SERVICE_HOST: not set"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "KUBERNETES_SERVICE_PORT: not set"),
        (
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "https"},
            "KUBERNETES_SERVICE_PORT: not a port number: 'https'",
        ),
    ],
)
def test_in_cluster_env_errors_name_the_variable(
    sa_root: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(KubeConfigError, match=message):
        KubeConfig.in_cluster(env, root=sa_root)


def test_in_cluster_missing_token_names_the_file(sa_root: Path) -> None:
    (sa_root / "token").unlink()
    with pytest.raises(KubeConfigError) as err:
        KubeConfig.in_cluster(ENV, root=sa_root)
    assert str(err.value) == f"{sa_root / 'token'}: cannot read the service-account file"


def test_from_env_prefers_in_cluster_then_kubeconfig(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path, KUBECONFIG)
    assert KubeConfig.from_env({"KUBECONFIG": f"{path}:/nonexistent"}).server == (
        "https://127.0.0.1:6443"
    )
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_PORT"):
        KubeConfig.from_env({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBECONFIG": str(path)})


# -- kubeconfig ----------------------------------------------------------------------------

KUBECONFIG: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "kind-sluice",
    "clusters": [
        {
            "name": "kind-sluice",
            "cluster": {
                "server": "https://127.0.0.1:6443",
                "certificate-authority-data": base64.b64encode(b"PEM CA").decode(),
            },
        },
        {
            "name": "dev",
            "cluster": {
                "server": "https://dev.example:443/",
                "certificate-authority": "certs/ca.crt",
                "insecure-skip-tls-verify": True,
                "tls-server-name": "kubernetes.default.svc",
            },
        },
    ],
    "contexts": [
        {"name": "kind-sluice", "context": {"cluster": "kind-sluice", "user": "admin"}},
        {
            "name": "dev",
            "context": {"cluster": "dev", "user": "file-user", "namespace": "knative-serving"},
        },
        {"name": "plugin", "context": {"cluster": "dev", "user": "gke"}},
        {"name": "oidc", "context": {"cluster": "dev", "user": "oidc"}},
    ],
    "users": [
        {
            "name": "admin",
            "user": {
                "client-certificate-data": base64.b64encode(b"CERT").decode(),
                "client-key-data": base64.b64encode(b"KEY").decode(),
                "token": "static-token",
            },
        },
        {"name": "file-user", "user": {"tokenFile": "token"}},
        {"name": "gke", "user": {"exec": {"command": "gke-gcloud-auth-plugin"}}},
        {"name": "oidc", "user": {"auth-provider": {"name": "oidc"}}},
    ],
}


def write_kubeconfig(tmp_path: Path, doc: dict[str, Any]) -> Path:
    (tmp_path / "certs").mkdir(exist_ok=True)
    (tmp_path / "certs" / "ca.crt").write_text("PEM\n")
    (tmp_path / "token").write_text("file-token\n")
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_current_context_with_inline_data(tmp_path: Path) -> None:
    cfg = KubeConfig.from_kubeconfig(write_kubeconfig(tmp_path, KUBECONFIG))
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.ca_data == "PEM CA"
    assert (cfg.client_cert_data, cfg.client_key_data) == (b"CERT", b"KEY")
    assert cfg.token == "static-token"
    assert not cfg.insecure_skip_tls_verify
    assert "static-token" not in repr(cfg) and "KEY" not in repr(cfg)


def test_kubeconfig_named_context_resolves_files_beside_the_kubeconfig(tmp_path: Path) -> None:
    cfg = KubeConfig.from_kubeconfig(write_kubeconfig(tmp_path, KUBECONFIG), context="dev")
    assert cfg.server == "https://dev.example:443"
    assert cfg.ca_file == str((tmp_path / "certs" / "ca.crt").resolve())
    assert cfg.token_file == str((tmp_path / "token").resolve())
    assert cfg.insecure_skip_tls_verify
    assert cfg.tls_server_name == "kubernetes.default.svc"
    assert cfg.namespace == "knative-serving"


@pytest.mark.parametrize(
    ("context", "field"),
    [("plugin", "users[gke].user.exec"), ("oidc", "users[oidc].user.auth-provider")],
)
def test_kubeconfig_credential_plugins_are_refused_naming_the_field(
    tmp_path: Path, context: str, field: str
) -> None:
    path = write_kubeconfig(tmp_path, KUBECONFIG)
    with pytest.raises(KubeConfigError) as err:
        KubeConfig.from_kubeconfig(path, context=context)
    assert str(err.value).startswith(f"{path}: {field}: credential plugins are not supported")
    assert "\n" not in str(err.value)


def _mutated(mutate: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(KUBECONFIG))
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("mutate", "context", "message"),
    [
        (lambda d: d.pop("current-context"), None, "current-context: not set"),
        (lambda d: None, "nope", "contexts: no entry named 'nope'"),
        (
            lambda d: d["clusters"][0]["cluster"].pop("server"),
            None,
            "clusters[kind-sluice].cluster.server: missing",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update(server="127.0.0.1:6443"),
            None,
            "clusters[kind-sluice].cluster.server: expected an http(s) URL",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update({"certificate-authority-data": "%%"}),
            None,
            "clusters[kind-sluice].cluster.certificate-authority-data: invalid base64",
        ),
        (
            lambda d: d["users"][1]["user"].update(tokenFile="missing"),
            "dev",
            "users[file-user].user.tokenFile: cannot read",
        ),
        (
            lambda d: d["users"][0]["user"].pop("client-key-data"),
            None,
            "users[admin].user.client-key: a client certificate needs its key",
        ),
    ],
)
def test_kubeconfig_errors_are_one_line_naming_the_field(
    tmp_path: Path, mutate: Any, context: str | None, message: str
) -> None:
    path = write_kubeconfig(tmp_path, _mutated(mutate))
    with pytest.raises(KubeConfigError) as err:
        KubeConfig.from_kubeconfig(path, context=context)
    assert str(err.value).startswith(f"{path}: {message}")
    assert "\n" not in str(err.value)


def test_kubeconfig_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read"):
        KubeConfig.from_kubeconfig(tmp_path / "absent")
    bad = tmp_path / "bad"
    bad.write_text("clusters: [\n")
    with pytest.raises(KubeConfigError, match="invalid YAML") as err:
        KubeConfig.from_kubeconfig(bad)
    assert "\n" not in str(err.value)


# -- tokens --------------------------------------------------------------------------------


def test_token_file_is_reread_after_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    now = [0.0]
    source = TokenSource(KubeConfig("https://k:443", token_file=str(path)), clock=lambda: now[0])
    assert source.token() == "one"
    path.write_text("two\n")
    now[0] = 59.9
    assert source.token() == "one"
    now[0] = 60.0
    assert source.token() == "two"


def test_token_file_vanishing_keeps_the_last_token_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    source = TokenSource(KubeConfig("https://k:443", token_file=str(path)), reread_seconds=0)
    path.unlink()
    with caplog.at_level(logging.WARNING, "sluice.activator.kube"):
        assert [source.token() for _ in range(3)] == ["one"] * 3
    assert len(caplog.records) == 1
    assert str(path) in caplog.records[0].getMessage()
    path.write_text("two")
    assert source.token() == "two"


def test_static_token_and_identity_from_a_service_account_jwt(sa_root: Path) -> None:
    assert TokenSource(KubeConfig("https://k:443", token="abc")).token() == "abc"
    source = TokenSource(KubeConfig.in_cluster(ENV, root=sa_root))
    assert source.identity() == SA
    assert identity_from_token("not-a-jwt") is None
    assert identity_from_token("a.!!!.c") is None


# -- TLS -----------------------------------------------------------------------------------


def test_plain_http_server_needs_no_tls_context() -> None:
    assert ssl_context(KubeConfig("http://127.0.0.1:8080")) is None


def test_insecure_skip_tls_verify_turns_verification_off() -> None:
    ctx = ssl_context(KubeConfig("https://127.0.0.1:6443", insecure_skip_tls_verify=True))
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


def test_unusable_ca_data_is_one_line() -> None:
    with pytest.raises(KubeConfigError, match="certificate-authority: cannot load"):
        ssl_context(KubeConfig("https://127.0.0.1:6443", ca_data="garbage"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_ca_and_client_certificate_given_as_data_load(tmp_path: Path) -> None:
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=sluice-test", "-keyout", str(tmp_path / "key.pem"),
            "-out", str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    cert = (tmp_path / "cert.pem").read_bytes()
    key = (tmp_path / "key.pem").read_bytes()
    cfg = KubeConfig(
        "https://127.0.0.1:6443",
        ca_data=cert.decode(),
        client_cert_data=cert,
        client_key_data=key,
    )
    ctx = ssl_context(cfg)
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.get_ca_certs()[0]["subject"] == ((("commonName", "sluice-test"),),)


# -- back-off ------------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_bounded_jitter_and_resets() -> None:
    backoff = Backoff(initial=0.8, maximum=30.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.delay() for _ in range(10)]
    bases = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= min(30.0, base * 1.5)
    backoff.reset()
    assert 0.8 <= backoff.delay() <= 1.2
