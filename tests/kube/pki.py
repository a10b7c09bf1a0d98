"""Throw-away PKI for the test API server, made with the ``openssl`` CLI (no Python deps).

Everything lives in one directory and is valid for two days: a CA, the API server's serving
certificate (SANs 127.0.0.1, localhost and the in-cluster names), an admin client certificate
in ``system:masters`` (authorised by RBAC's built-in binding, not by any rule of ours), and the
service-account token signing key pair. Keys are P-256 except the service-account key, which
is RSA because every token verifier supports RS256.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki"]

DAYS = "2"


@dataclass(frozen=True, slots=True)
class Pki:
    """Paths of the PEM files the API server and its clients use."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"openssl {args[0]} failed: {last}")


def _leaf(directory: Path, name: str, subject: str, extensions: str, ca: tuple[Path, Path]) -> None:
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", DAYS, "-extfile", str(ext), "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


def make_pki(directory: Path, service_ip: str) -> Pki:
    """Create the CA, serving, admin and service-account keys under ``directory``.

    ``service_ip`` is the first address of the service CIDR (the ``kubernetes`` Service's
    ClusterIP), put in the serving certificate as a real cluster's would be.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", DAYS, "-subj", "/CN=sluice-kube-tier-ca",
        cwd=directory,
    )  # fmt: skip
    ca = (directory / "ca.crt", directory / "ca.key")
    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{service_ip}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    _leaf(
        directory,
        "apiserver",
        "/CN=kube-apiserver",
        f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}",
        ca,
    )
    _leaf(
        directory, "admin", "/O=system:masters/CN=sluice-admin", "extendedKeyUsage=clientAuth", ca
    )
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key",
        cwd=directory,
    )  # fmt: skip
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return Pki(
        ca_cert=ca[0],
        ca_key=ca[1],
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
