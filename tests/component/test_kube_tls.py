"""The client's TLS settings against an HTTPS fake API server on loopback (certs by openssl)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from activator.kube.client import KubeClient, TransportError
from activator.kube.config import KubeConfig

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

SERVER_NAME = "kubernetes.default.svc"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(d: Path, name: str, subject: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.crt",
             "-extfile", f"{name}.ext", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=sluice-test-ca", cwd=d)  # fmt: skip
    _issue(d, "server", "/CN=kube-apiserver", f"subjectAltName=DNS:{SERVER_NAME}\n")
    _issue(d, "client", "/CN=sluice-activator/O=system:masters", "extendedKeyUsage=clientAuth\n")
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


@dataclass
class TlsServer:
    url: str
    client_subjects: list[str]


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[TlsServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # record a client certificate when one is sent
    subjects: list[str] = []

    async def version(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            subjects.append(dict(x[0] for x in peer["subject"])["commonName"])
        return web.json_response({"gitVersion": "v1.33.0-tls"})

    app = web.Application()
    app.router.add_get("/version", version)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield TlsServer(f"https://127.0.0.1:{port}", subjects)
    finally:
        await runner.cleanup()


async def test_ca_data_and_server_name_verify_the_api_server(pki: Pki, server: TlsServer) -> None:
    cfg = KubeConfig(server.url, ca_data=pki.ca.read_text(), tls_server_name=SERVER_NAME)
    async with KubeClient(cfg) as client:
        assert (await client.get("/version"))["gitVersion"] == "v1.33.0-tls"
    assert server.client_subjects == []


async def test_client_certificate_data_is_presented(pki: Pki, server: TlsServer) -> None:
    cfg = KubeConfig(
        server.url,
        ca_file=str(pki.ca),
        tls_server_name=SERVER_NAME,
        client_cert_data=pki.client_cert.read_bytes(),
        client_key_data=pki.client_key.read_bytes(),
    )
    async with KubeClient(cfg) as client:
        await client.get("/version")
    assert server.client_subjects == ["sluice-activator"]


async def test_certificate_name_mismatch_is_a_one_line_transport_error(
    pki: Pki, server: TlsServer
) -> None:
    cfg = KubeConfig(server.url, ca_file=str(pki.ca))  # 127.0.0.1 is not in the certificate
    async with KubeClient(cfg) as client:
        with pytest.raises(TransportError) as err:
            await client.get("/version")
    assert str(err.value).startswith(f"cannot reach the Kubernetes API at {server.url}/version")
    assert "certificate" in str(err.value).lower()
    assert "\n" not in str(err.value)


async def test_insecure_skip_tls_verify_accepts_an_unknown_ca(server: TlsServer) -> None:
    async with KubeClient(KubeConfig(server.url, insecure_skip_tls_verify=True)) as client:
        assert (await client.get("/version"))["gitVersion"] == "v1.33.0-tls"
