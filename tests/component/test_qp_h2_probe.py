"""Knative's HTTP/2 auto-detection in readiness probes (``ENABLE_HTTP2_AUTO_DETECTION``),
against real servers: nghttpd speaks only h2c, Python's ``http.server`` only HTTP/1.1, and
Sluice's own engine both."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proxy.dataplane.prober import ProbeError, probe_h2c
from proxy.exchange import Exchange
from proxy.server import HttpServer
from queueproxy.readiness import HttpGetAction, ProbeSpec, ReadinessProber
from tests.ports import free_port

pytestmark = pytest.mark.timeout(30)


def spec(port: int) -> ProbeSpec:
    get = HttpGetAction(host="127.0.0.1", port=port, path="healthz", scheme="HTTP",
                        headers=(("X-Probe", "yes"),))  # fmt: skip
    return ProbeSpec(http_get=get, period_seconds=1, timeout_seconds=2, success_threshold=1)


@pytest.fixture
def nghttpd(tmp_path: Path) -> Iterator[int]:
    tool = shutil.which("nghttpd")
    assert tool is not None, "nghttpd (Debian nghttp2-server) is missing; .ci/run installs it"
    (tmp_path / "healthz").write_text("ok\n")
    port = free_port()
    proc = subprocess.Popen(
        [tool, "--no-tls", "-d", str(tmp_path), "--address=127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def http1_only() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("X-Probe", "-"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def both() -> AsyncIterator[tuple[int, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []

    async def handler(ex: Exchange) -> None:
        seen.append((ex.version, (ex.header(b"x-probe") or b"-").decode()))
        ex.send(200, b"ok")

    server = HttpServer(handler)
    await server.start("127.0.0.1", 0)
    try:
        yield server.port, seen
    finally:
        await server.shutdown(1)


async def wait_for_nghttpd(port: int) -> None:
    for _ in range(100):
        try:
            await probe_h2c("127.0.0.1", port, "/healthz", [], 1)
            return
        except ProbeError:
            await asyncio.sleep(0.05)
    raise AssertionError("nghttpd did not come up")


async def test_an_h2c_only_app_is_ready_only_with_auto_detection(nghttpd: int) -> None:
    await wait_for_nghttpd(nghttpd)
    assert await ReadinessProber(spec(nghttpd), auto_http2=True).check()
    assert not await ReadinessProber(spec(nghttpd)).check()


async def test_an_http1_app_passes_on_the_fallback(http1_only: tuple[int, list[str]]) -> None:
    port, seen = http1_only
    assert await ReadinessProber(spec(port), auto_http2=True).check()
    # Knative's quirk, kept: the HTTP/1.1 fallback is a bare GET, without the probe's headers.
    assert seen == ["-"]


async def test_an_app_speaking_both_is_probed_over_h2c_with_its_headers(
    both: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = both
    assert await ReadinessProber(spec(port), auto_http2=True).check()
    assert seen == [("2.0", "-"), ("2.0", "yes")]  # the bare detection, then the probe
