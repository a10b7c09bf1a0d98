"""A fake transport and helpers to drive ``HttpServerProtocol`` with no sockets (uvicorn-style)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.http1 import Exchange, Handler, HttpServerProtocol, ServerContext
from proxy.limits import ServerLimits


class FakeTransport(asyncio.Transport):
    """Records writes and flow-control calls; ``close`` reports ``connection_lost`` soon after."""

    def __init__(self, protocol: asyncio.Protocol | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.buffer = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.eof_written = False

    @property
    def data(self) -> bytes:
        return bytes(self.buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.buffer += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("10.0.0.7", 50000)
        return default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0


async def ok_handler(ex: Exchange) -> None:
    ex.send(200, b"hello")


def make_protocol(
    handler: Handler = ok_handler,
    limits: ServerLimits | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> tuple[HttpServerProtocol, FakeTransport]:
    """A connected protocol over a fake transport, on the running loop."""
    ctx = ServerContext(handler, limits or ServerLimits(), loop or asyncio.get_running_loop())
    proto = HttpServerProtocol(ctx)
    transport = FakeTransport(proto)
    proto.connection_made(transport)
    return proto, transport


async def settle(proto: HttpServerProtocol, rounds: int = 30) -> None:
    """Let handler tasks run as far as they can go without outside input."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until_closed(transport: FakeTransport, timeout: float = 2.0) -> None:
    """Wait (in real time) for the protocol to close ``transport``."""
    async with asyncio.timeout(timeout):
        while not transport.closed:
            await asyncio.sleep(0.005)


class Recorder:
    """A handler that records each exchange and answers it with ``respond``."""

    def __init__(self, respond: Callable[[Exchange], Awaitable[None]] | None = None) -> None:
        self.seen: list[Exchange] = []
        self.bodies: list[bytes] = []
        self._respond = respond

    async def __call__(self, ex: Exchange) -> None:
        self.seen.append(ex)
        if self._respond is not None:
            await self._respond(ex)
            return
        body = bytearray()
        while chunk := await ex.read_body():
            body += chunk
        self.bodies.append(bytes(body))
        ex.send(200, b"ok:" + ex.target)

    @property
    def targets(self) -> list[bytes]:
        return [ex.target for ex in self.seen]


def responses(data: bytes) -> list[tuple[int, bytes]]:
    """(status, raw head) for every response head found in ``data`` (bodies skipped)."""
    out: list[tuple[int, bytes]] = []
    rest = data
    while rest.startswith(b"HTTP/1."):
        head, _, rest = rest.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        out.append((status, head))
        rest = rest[length:]
    return out
