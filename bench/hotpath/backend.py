"""``python -m bench.hotpath.backend --port N``: the built-in static backend.

Used when nginx is not installed. Every request gets ``200`` and ``hello world\\n`` on a
keep-alive connection, except Knative's pod probe (``K-Network-Probe: queue``), which gets
``200 queue``. Request bodies are read and discarded.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools
import uvloop

_HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n"
_QUEUE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nqueue"
_PROBE = b"k-network-probe"


class _Conn(asyncio.Protocol):
    """One downstream connection; the parser calls back into it per request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.probe = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == _PROBE and value.strip() == b"queue":
            self.probe = True

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        self.transport.write(_QUEUE if self.probe else _HELLO)
        self.probe = False
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Conn, "127.0.0.1", port, backlog=1024)
    print(f"builtin backend listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath.backend")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
