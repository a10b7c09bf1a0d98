"""A user container that answers while the request body is still arriving (full duplex).

``python tests/e2e/apps/duplex_app.py [PORT]`` listens on 127.0.0.1 (port 0 = any free one)
and prints ``PORT=<n>`` once listening. Any request with a chunked body gets ``200`` with a
chunked body at once, then every body chunk is written back as it arrives, and the
response ends when the request body does. Plain asyncio, so nothing buffers the exchange.
A connection without a chunked body (a TCP readiness probe, say) is simply closed.
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"transfer-encoding: chunked" not in head.lower():
            return
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        await writer.drain()
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return
            writer.write(b"%x\r\n%s\r\n" % (size, data[:-2]))
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(
        handle, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0
    )
    print(f"PORT={server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
