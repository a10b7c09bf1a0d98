"""The scripted app both sidecars front in the conformance suite (one instance per sidecar).

``python tests/conformance/app.py`` listens on a free loopback port and prints ``PORT=<n>``.
Routes (every answer is deterministic, so Go's and Sluice's paths can be compared byte for
byte):

* ``/headers`` (any method, and every path not listed): JSON ``{"method", "path",
  "headers": [[name, value], ...], "body_len", "body_sha256"}``: what the app received, in
  order, as sent on the wire.
* ``/status/<n>``: status ``n`` with body ``status <n>``.
* ``/sleep/<ms>``: ``slept`` after ``ms`` milliseconds (``/inflight`` counts these).
* ``/inflight``: how many ``/sleep`` requests are in progress.
* ``/stream/<n>/<ms>``: a chunked answer of ``n`` pieces ``piece <i>\\n``, ``ms`` apart.
* ``/big/<n>``: ``n`` bytes of a repeating pattern.
* ``/respond-headers``: 200 carrying hop-by-hop and Connection-named headers of its own.
* ``/ws``: a websocket that echoes every text message prefixed with ``echo:``.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

from aiohttp import WSMsgType, web

_INFLIGHT = 0


async def headers(request: web.Request) -> web.Response:
    body = await request.read()
    doc = {
        "method": request.method,
        "path": request.raw_path,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    return web.json_response(doc)


async def status(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    return web.Response(status=n, text=f"status {n}")


async def sleep(request: web.Request) -> web.Response:
    global _INFLIGHT
    _INFLIGHT += 1
    try:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
    finally:
        _INFLIGHT -= 1
    return web.Response(text="slept")


async def inflight(request: web.Request) -> web.Response:
    return web.Response(text=str(_INFLIGHT))


async def stream(request: web.Request) -> web.StreamResponse:
    pieces, gap = int(request.match_info["n"]), int(request.match_info["ms"]) / 1000
    resp = web.StreamResponse()
    resp.content_type = "text/plain"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(pieces):
        if i:
            await asyncio.sleep(gap)
        await resp.write(f"piece {i}\n".encode())
    await resp.write_eof()
    return resp


async def big(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    pattern = b"0123456789abcdef"
    return web.Response(body=(pattern * (n // 16 + 1))[:n], content_type="application/octet-stream")


async def respond_headers(request: web.Request) -> web.Response:
    resp = web.Response(text="ok")
    resp.headers["X-App"] = "1"
    resp.headers["X-Hop"] = "dropped-if-named"
    resp.headers["Connection"] = "X-Hop"
    resp.headers["Keep-Alive"] = "timeout=5"
    resp.headers["Proxy-Authenticate"] = "Basic"
    resp.headers["Upgrade"] = "h2c"
    resp.headers["Trailer"] = "X-Trailer"
    resp.headers["Set-Cookie"] = "a=1"
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
    return ws


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/status/{n}", status)
    app.router.add_route("*", "/sleep/{ms}", sleep)
    app.router.add_get("/inflight", inflight)
    app.router.add_get("/stream/{n}/{ms}", stream)
    app.router.add_get("/big/{n}", big)
    app.router.add_get("/respond-headers", respond_headers)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", headers)
    return app


async def main() -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    await site.start()
    print(f"PORT={runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
