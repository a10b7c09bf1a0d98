"""The queue-proxy's TLS certificate is re-read when its files change, without a restart."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from proxy.http1 import Exchange
from proxy.server import HttpServer
from queueproxy.main import tls_context

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]


def make_cert(folder: Path, common_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={common_name}",
            "-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.crt"),
        ],
        check=True, capture_output=True, timeout=20,
    )  # fmt: skip


async def served_cert(port: int) -> bytes:
    """The certificate (DER) a fresh TLS handshake gets."""
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return der


def der(folder: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert((folder / "tls.crt").read_text())


async def test_a_new_certificate_is_served_and_a_broken_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certs = tmp_path / "certs"
    make_cert(certs, "first")
    make_cert(tmp_path / "next", "second")
    first, second = der(certs), der(tmp_path / "next")
    reloader = tls_context(str(certs))
    assert reloader is not None

    async def handler(ex: Exchange) -> None:
        ex.send(200, b"ok")

    server = HttpServer(handler)
    await server.start("127.0.0.1", 0, ssl_context=reloader.context)
    try:
        assert await served_cert(server.port) == first
        assert not reloader.check()  # nothing changed
        for name in ("tls.crt", "tls.key"):
            shutil.copy(tmp_path / "next" / name, certs / name)
        assert reloader.check()
        assert await served_cert(server.port) == second
        (certs / "tls.key").write_text("not a key\n")
        with caplog.at_level(logging.ERROR, "sluice.queueproxy"):
            assert not reloader.check()
            assert not reloader.check()  # the same broken files: no second line
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1
        assert await served_cert(server.port) == second  # the old one stays in use
    finally:
        await server.shutdown(grace=0)
