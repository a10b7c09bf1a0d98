"""``python -m proxy.passthrough`` as a real process on loopback: the engine end to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.component.engine_harness import (
    HOST,
    RawClient,
    ScriptedUpstream,
    UpstreamConn,
    serve_ok,
)
from tests.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]


class Passthrough:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port


@contextlib.asynccontextmanager
async def passthrough(upstream_port: int) -> AsyncIterator[Passthrough]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.passthrough",
        "--listen",
        f"{HOST}:{port}",
        "--upstream",
        f"{HOST}:{upstream_port}",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert b"listening on" in line, line
        yield Passthrough(proc, port)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)


async def upstream(script: object = serve_ok) -> ScriptedUpstream:
    return await ScriptedUpstream(script).start()  # type: ignore[arg-type]


async def test_keep_alive_gets_share_one_client_and_one_upstream_connection() -> None:
    up = await upstream()
    try:
        async with passthrough(up.port) as proxy:
            client = await RawClient.connect(proxy.port)
            for i in range(5):
                resp = await client.get(b"/%d" % i)
                assert (resp.status, resp.body) == (200, b"ok:/%d" % i)
                assert resp.header(b"connection") is None
            client.close()
            assert len(up.conns) == 1
            assert len(up.conns[0].requests) == 5
    finally:
        await up.close()


async def test_streaming_chunked_post_arrives_whole_and_in_order() -> None:
    async def echo(conn: UpstreamConn) -> None:
        msg = await conn.request()
        await conn.respond(body=msg.body)

    up = await upstream(echo)
    try:
        async with passthrough(up.port) as proxy:
            client = await RawClient.connect(proxy.port)
            await client.send(b"POST /s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            expected = b""
            for i in range(50):
                part = bytes([65 + i % 26]) * (1000 + i)
                expected += part
                await client.send(b"%x\r\n%s\r\n" % (len(part), part))
            await client.send(b"0\r\n\r\n")
            resp = await client.response()
            assert (resp.status, resp.body) == (200, expected)
            assert up.conns[0].requests[0].header(b"transfer-encoding") == b"chunked"
            client.close()
    finally:
        await up.close()


async def test_websocket_echo_through_the_process() -> None:
    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    up_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            passthrough(up_port) as proxy,
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://{HOST}:{proxy.port}/ws") as sock,
        ):
            await sock.send_str("hi")
            assert (await asyncio.wait_for(sock.receive(), 5)).data == "echo:hi"
            blob = os.urandom(100_000)
            await sock.send_bytes(blob)
            assert (await asyncio.wait_for(sock.receive(), 5)).data == blob
            await sock.close()
            assert sock.close_code == 1000
    finally:
        await runner.cleanup()


async def test_sigterm_finishes_in_flight_requests_then_exits() -> None:
    release = asyncio.Event()
    got = asyncio.Event()

    async def slow(conn: UpstreamConn) -> None:
        await conn.request()
        got.set()
        await release.wait()
        await conn.respond(body=b"finished")

    up = await upstream(slow)
    try:
        async with passthrough(up.port) as proxy:
            idle = await RawClient.connect(proxy.port)
            busy = await RawClient.connect(proxy.port)
            await busy.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            await asyncio.wait_for(got.wait(), 5)
            os.kill(proxy.proc.pid, signal.SIGTERM)
            await idle.assert_closed()  # idle connections go at once
            release.set()
            resp = await busy.response()
            assert (resp.status, resp.body) == (200, b"finished")
            assert resp.header(b"connection") == b"close"
            await busy.assert_closed()
            assert await asyncio.wait_for(proxy.proc.wait(), 10) == 0
            with pytest.raises(OSError):
                await RawClient.connect(proxy.port)
    finally:
        await up.close()
