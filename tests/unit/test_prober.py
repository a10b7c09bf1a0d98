"""One-shot TCP/HTTP probes against scripted loopback servers."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from proxy.dataplane.prober import (
    MAX_BODY_BYTES,
    HttpProbeResponse,
    ProbeError,
    probe_http,
    probe_tcp,
)
from tests.ports import closed_port

pytestmark = pytest.mark.timeout(10)

Responder = Callable[[bytes], Awaitable[bytes | None]]


class ScriptedServer:
    """Reads one request head per connection, answers with ``responder``'s bytes."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            answer = await self.responder(head)
            if answer is not None:
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def fixed(answer: bytes) -> Responder:
    async def respond(_: bytes) -> bytes:
        return answer

    return respond


@pytest.fixture
async def ok_server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nqueue"))
    await srv.start()
    yield srv
    await srv.stop()


async def test_probe_tcp_succeeds_against_listener_and_fails_once_closed() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await probe_tcp("127.0.0.1", port, 1.0)
    server.close()
    await server.wait_closed()
    with pytest.raises(ProbeError, match="connection refused"):
        await probe_tcp("127.0.0.1", port, 1.0)


async def test_probe_tcp_fails_without_listener() -> None:
    with pytest.raises(ProbeError, match=r"dial tcp 127\.0\.0\.1:\d+"):
        await probe_tcp("127.0.0.1", closed_port(), 1.0)


async def test_probe_http_returns_status_and_body(ok_server: ScriptedServer) -> None:
    resp = await probe_http("127.0.0.1", ok_server.port, "/healthz", [], 1.0)
    assert resp == HttpProbeResponse(status=200, body=b"queue")


async def test_probe_http_sends_get_host_headers_and_connection_close(
    ok_server: ScriptedServer,
) -> None:
    await probe_http(
        "127.0.0.1",
        ok_server.port,
        "/ready",
        [("K-Network-Probe", "queue"), ("User-Agent", "Knative-Activator-Probe")],
        1.0,
    )
    head = ok_server.requests[0].decode()
    lines = head.split("\r\n")
    assert lines[0] == "GET /ready HTTP/1.1"
    assert f"Host: 127.0.0.1:{ok_server.port}" in lines
    assert "K-Network-Probe: queue" in lines
    assert "User-Agent: Knative-Activator-Probe" in lines
    assert "Connection: close" in lines
    assert "upgrade" not in head.lower()


async def test_probe_http_host_header_from_caller_replaces_default(
    ok_server: ScriptedServer,
) -> None:
    await probe_http("127.0.0.1", ok_server.port, "/", [("Host", "example.com")], 1.0)
    lines = ok_server.requests[0].decode().split("\r\n")
    assert "Host: example.com" in lines
    assert sum(1 for line in lines if line.lower().startswith("host:")) == 1


async def test_probe_http_path_without_slash_is_rooted(ok_server: ScriptedServer) -> None:
    await probe_http("127.0.0.1", ok_server.port, "", [], 1.0)
    assert ok_server.requests[0].startswith(b"GET / HTTP/1.1\r\n")


async def test_probe_http_returns_non_2xx_status_without_raising() -> None:
    srv = ScriptedServer(fixed(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"))
    await srv.start()
    try:
        resp = await probe_http("127.0.0.1", srv.port, "/", [], 1.0)
    finally:
        await srv.stop()
    assert resp.status == 503
    assert resp.body == b""


async def test_probe_http_reads_chunked_body() -> None:
    srv = ScriptedServer(
        fixed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nque\r\n2\r\nue\r\n0\r\n\r\n"
        )
    )
    await srv.start()
    try:
        resp = await probe_http("127.0.0.1", srv.port, "/", [], 1.0)
    finally:
        await srv.stop()
    assert resp.body == b"queue"


async def test_probe_http_reads_unframed_body_until_eof() -> None:
    srv = ScriptedServer(fixed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nactivator"))
    await srv.start()
    try:
        resp = await probe_http("127.0.0.1", srv.port, "/", [], 1.0)
    finally:
        await srv.stop()
    assert resp == HttpProbeResponse(200, b"activator")


async def test_probe_http_cuts_body_at_64_kib() -> None:
    big = b"x" * (MAX_BODY_BYTES + 1000)
    srv = ScriptedServer(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big))
    await srv.start()
    try:
        resp = await probe_http("127.0.0.1", srv.port, "/", [], 2.0)
    finally:
        await srv.stop()
    assert resp.status == 200
    assert len(resp.body) == MAX_BODY_BYTES


async def test_probe_http_fails_on_malformed_response() -> None:
    srv = ScriptedServer(fixed(b"NOT HTTP AT ALL\r\n\r\n"))
    await srv.start()
    try:
        with pytest.raises(ProbeError, match="malformed response"):
            await probe_http("127.0.0.1", srv.port, "/", [], 1.0)
    finally:
        await srv.stop()


async def test_probe_http_fails_when_body_is_truncated() -> None:
    srv = ScriptedServer(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
    await srv.start()
    try:
        with pytest.raises(ProbeError, match="before the response was complete"):
            await probe_http("127.0.0.1", srv.port, "/", [], 1.0)
    finally:
        await srv.stop()


async def test_probe_http_fails_when_connection_closes_without_answer() -> None:
    srv = ScriptedServer(fixed(b""))
    await srv.start()
    try:
        with pytest.raises(ProbeError):
            await probe_http("127.0.0.1", srv.port, "/", [], 1.0)
    finally:
        await srv.stop()


async def test_probe_http_fails_on_connection_refused() -> None:
    with pytest.raises(ProbeError, match="connection refused"):
        await probe_http("127.0.0.1", closed_port(), "/", [], 1.0)


async def test_probe_http_fails_when_server_is_slower_than_timeout() -> None:
    release = asyncio.Event()

    async def slow(_: bytes) -> bytes:
        await release.wait()
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    srv = ScriptedServer(slow)
    await srv.start()
    try:
        with pytest.raises(ProbeError, match="timeout"):
            await probe_http("127.0.0.1", srv.port, "/", [], 0.05)
    finally:
        release.set()
        await srv.stop()


async def test_probe_http_rejects_unknown_scheme(ok_server: ScriptedServer) -> None:
    with pytest.raises(ProbeError, match="scheme"):
        await probe_http("127.0.0.1", ok_server.port, "/", [], 1.0, scheme="ftp")


def make_server_tls(tmp_path: Path) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a self-signed certificate")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x"]
    subprocess.run(
        ["openssl", *args, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def test_probe_http_https_scheme_works_with_unverified_certificate(tmp_path: Path) -> None:
    server_ctx = make_server_tls(tmp_path)
    srv = ScriptedServer(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    await srv.start(server_ctx)
    try:
        resp = await probe_http("127.0.0.1", srv.port, "/", [], 5.0, scheme="HTTPS")
    finally:
        await srv.stop()
    assert resp == HttpProbeResponse(200, b"ok")
