"""``python -m proxy.passthrough``: the bare engine as a reverse proxy to one upstream.

It exists to measure the engine alone (``bench/hotpath``) and to try it by hand. The
components add their own behaviour around the same ``forward`` call.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from proxy.forward import NO_REWRITE, Forwarding, forward
from proxy.http1 import Exchange
from proxy.pool import UpstreamPool
from proxy.runner import run, settle_gc
from proxy.server import HttpServer


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class Passthrough:
    """Forward every request to one upstream, from the engine's callbacks (no task)."""

    def __init__(self, pool: UpstreamPool, host: str, port: int) -> None:
        self.pool = pool
        self.host = host
        self.port = port

    async def __call__(self, ex: Exchange) -> None:
        await forward(ex, self.pool, self.host, self.port)

    def fast(self, ex: Exchange) -> bool:
        pool = self.pool
        host = self.host
        port = self.port
        Forwarding(ex, pool, host, port, NO_REWRITE, _complete).start(pool.take_idle(host, port))
        return True


def _complete(ex: Exchange, status: int) -> None:
    ex.complete()


async def serve(listen: tuple[str, int], upstream: tuple[str, int], ready: bool = True) -> None:
    pool = UpstreamPool(max_idle_per_host=1000)
    server = HttpServer(Passthrough(pool, upstream[0], upstream[1]))
    await server.start(listen[0], listen[1])
    settle_gc()
    if ready:
        print(f"sluice passthrough listening on {listen[0]}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown(grace=5.0)
    pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.passthrough", description=__doc__)
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 8000))
    parser.add_argument("--upstream", type=_address, required=True)
    args = parser.parse_args(argv)
    run(lambda: serve(args.listen, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
