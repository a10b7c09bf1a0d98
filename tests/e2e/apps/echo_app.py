"""A tiny stand-in for "user app + queue-proxy" in activator end-to-end tests.

``python tests/e2e/apps/echo_app.py [PORT]`` listens on 127.0.0.1 (port 0 = any free one) and
prints ``PORT=<n>`` on stdout once listening. It answers:

* ``K-Network-Probe: queue`` (any path) → 200 ``queue``, as a queue-proxy does for the
  activator's probe;
* ``GET /stats`` → JSON ``{"port", "count", "max_concurrency"}`` (probes not counted);
* ``GET /headers`` → JSON of the request headers (lower-case names);
* anything else → 200 with its own port as the body, after ``?sleep=SECONDS`` if given.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

state = {"count": 0, "current": 0, "max_concurrency": 0, "port": 0}


async def handle(request: web.Request) -> web.StreamResponse:
    if request.headers.get("K-Network-Probe") == "queue":
        return web.Response(text="queue")
    port = state["port"]
    if request.path == "/stats":
        return web.json_response(
            {"port": port, "count": state["count"], "max_concurrency": state["max_concurrency"]}
        )
    if request.path == "/headers":
        return web.json_response({k.lower(): v for k, v in request.headers.items()})
    state["count"] += 1
    state["current"] += 1
    state["max_concurrency"] = max(state["max_concurrency"], state["current"])
    try:
        await request.read()
        sleep = float(request.query.get("sleep", "0"))
        if sleep:
            await asyncio.sleep(sleep)
        return web.Response(text=str(port))
    finally:
        state["current"] -= 1


async def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server) and server.sockets
    port = server.sockets[0].getsockname()[1]
    state["port"] = port
    print(f"PORT={port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
