"""A user container for queue-proxy end-to-end tests.

``python tests/e2e/apps/qp_app.py [PORT]`` listens on 127.0.0.1 (port 0 = any free one) and
prints ``PORT=<n>`` on stdout once listening. Routes:

* ``/sleep?ms=N`` → 200 ``slept N`` after N milliseconds;
* ``/concurrency-guard`` → 200 ``ok``, or 500 ``concurrent`` if it ever runs while another
  guarded request is inside (it holds each request for ``?ms=`` milliseconds, default 20);
* ``/guard-stats`` → JSON ``{"violations": n, "served": n}`` for ``/concurrency-guard``;
* ``/stream?chunks=N&interval=MS`` → a chunked 200 body of N lines ``chunk i\\n``, one every
  MS milliseconds;
* ``/upload`` → reads the body as a stream and answers with the byte count;
* ``/ws`` → a websocket echo; the text message ``close:<code>`` closes with that code;
* anything else → 200 ``ok``.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import WSMsgType, web

guard = {"inside": 0, "violations": 0, "served": 0}


async def sleep(request: web.Request) -> web.Response:
    ms = int(request.query.get("ms", "0"))
    await asyncio.sleep(ms / 1000)
    return web.Response(text=f"slept {ms}")


async def concurrency_guard(request: web.Request) -> web.Response:
    guard["inside"] += 1
    try:
        if guard["inside"] > 1:
            guard["violations"] += 1
            return web.Response(status=500, text="concurrent")
        await asyncio.sleep(int(request.query.get("ms", "20")) / 1000)
        guard["served"] += 1
        return web.Response(text="ok")
    finally:
        guard["inside"] -= 1


async def guard_stats(request: web.Request) -> web.Response:
    return web.json_response({"violations": guard["violations"], "served": guard["served"]})


async def stream(request: web.Request) -> web.StreamResponse:
    chunks = int(request.query.get("chunks", "5"))
    interval = int(request.query.get("interval", "100")) / 1000
    resp = web.StreamResponse()
    resp.content_type = "text/plain"
    await resp.prepare(request)
    for i in range(chunks):
        if i:
            await asyncio.sleep(interval)
        await resp.write(f"chunk {i}\n".encode())
    await resp.write_eof()
    return resp


async def upload(request: web.Request) -> web.Response:
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.Response(text=str(total))


async def ws(request: web.Request) -> web.WebSocketResponse:
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                await sock.close(code=int(msg.data[6:]), message=b"bye")
                break
            await sock.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sock.send_bytes(msg.data)
    return sock


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def main() -> None:
    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/sleep", sleep)
    app.router.add_get("/concurrency-guard", concurrency_guard)
    app.router.add_get("/guard-stats", guard_stats)
    app.router.add_get("/stream", stream)
    app.router.add_post("/upload", upload)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server) and server.sockets
    print(f"PORT={server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
