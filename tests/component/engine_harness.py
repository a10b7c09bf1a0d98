"""Shared pieces for the engine's component tests: scripted upstreams and a raw client.

* ``ScriptedUpstream`` is an asyncio server on 127.0.0.1 whose every connection records the
  exact bytes it received and runs a script (a coroutine taking an ``UpstreamConn``): read a
  request, send bytes, wait, close or reset.
* ``RawClient`` speaks to the proxy over a plain socket and never normalises bytes: it sends
  what a test gives it and parses responses only as far as the test asks.
* ``ProxyUnderTest`` runs ``HttpServer`` + ``forward`` in-process with a given handler.

Every read is bounded by ``asyncio.wait_for`` so a wrong engine fails a test instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.forward import NO_REWRITE, Rewrite, forward
from proxy.http1 import Exchange, Handler
from proxy.limits import ServerLimits
from proxy.pool import UpstreamPool
from proxy.server import HttpServer

HOST = "127.0.0.1"
#: Seconds any single read in a test may take before the test fails.
READ_TIMEOUT = 5.0

Script = Callable[["UpstreamConn"], Awaitable[None]]


# ------------------------------------------------------------------------------ parsing


@dataclass
class Message:
    """A parsed HTTP/1 message, with the raw bytes it came from."""

    first_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes
    #: True when the body ended by connection close (no framing).
    until_close: bool = False

    @property
    def status(self) -> int:
        return int(self.first_line.split(b" ")[1])

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self) -> set[bytes]:
        return {k.lower() for k, _ in self.headers}


class ByteReader:
    """Timed reads over a ``StreamReader`` that keep every byte seen."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.seen = bytearray()

    async def until(self, sep: bytes, timeout: float = READ_TIMEOUT) -> bytes:
        data = await asyncio.wait_for(self.reader.readuntil(sep), timeout)
        self.seen += data
        return data

    async def exactly(self, n: int, timeout: float = READ_TIMEOUT) -> bytes:
        data = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        self.seen += data
        return data

    async def some(self, n: int = 65536, timeout: float = READ_TIMEOUT) -> bytes:
        data = await asyncio.wait_for(self.reader.read(n), timeout)
        self.seen += data
        return data

    async def rest(self, timeout: float = READ_TIMEOUT) -> bytes:
        data = await asyncio.wait_for(self.reader.read(), timeout)
        self.seen += data
        return data

    async def message(
        self, *, request: bool, head_only: bool = False, timeout: float = READ_TIMEOUT
    ) -> Message:
        """One message: head, then a body framed by CL, chunked, or (responses) close."""
        raw = bytearray()
        head = await self.until(b"\r\n\r\n", timeout)
        raw += head
        lines = head[:-4].split(b"\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        msg = Message(lines[0], headers, b"", b"")
        te = msg.header(b"transfer-encoding")
        cl = msg.header(b"content-length")
        status = 0 if request else msg.status
        body = bytearray()
        if head_only or status in (204, 304) or 100 <= status < 200:
            pass
        elif te is not None and b"chunked" in te.lower():
            while True:
                size_line = await self.until(b"\r\n", timeout)
                raw += size_line
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    trailer = await self.until(b"\r\n", timeout)
                    raw += trailer
                    while trailer != b"\r\n":
                        trailer = await self.until(b"\r\n", timeout)
                        raw += trailer
                    break
                chunk = await self.exactly(size + 2, timeout)
                raw += chunk
                body += chunk[:-2]
        elif cl is not None:
            data = await self.exactly(int(cl), timeout)
            raw += data
            body += data
        elif not request:
            data = await self.rest(timeout)
            raw += data
            body += data
            msg.until_close = True
        msg.body = bytes(body)
        msg.raw = bytes(raw)
        return msg


# ------------------------------------------------------------------------- upstream


class UpstreamConn:
    """One accepted upstream connection: what it received, and means to answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.io = ByteReader(reader)
        self.writer = writer
        self.closed_by_peer = asyncio.Event()
        self.requests: list[Message] = []

    @property
    def received(self) -> bytes:
        return bytes(self.io.seen)

    async def request(self, timeout: float = READ_TIMEOUT) -> Message:
        msg = await self.io.message(request=True, timeout=timeout)
        self.requests.append(msg)
        return msg

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def respond(self, status: int = 200, body: bytes = b"ok", headers: bytes = b"") -> None:
        await self.send(
            b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), headers, body)
        )

    async def wait_eof(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Everything until the proxy closes its side; returns the extra bytes."""
        try:
            return await self.io.rest(timeout)
        except ConnectionResetError:
            return b""
        finally:
            self.closed_by_peer.set()

    async def closed(self, timeout: float = READ_TIMEOUT) -> None:
        """Wait until a ``wait_eof`` running in the script saw the proxy close."""
        await asyncio.wait_for(self.closed_by_peer.wait(), timeout)

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        """Close with RST instead of FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def serve_ok(conn: UpstreamConn) -> None:
    """Answer every request with ``200 ok`` on a keep-alive connection."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            msg = await conn.request(timeout=30)
            await conn.respond(body=b"ok:" + msg.first_line.split(b" ")[1])


class ScriptedUpstream:
    """A loopback server that runs ``script`` for each accepted connection."""

    def __init__(self, script: Script = serve_ok) -> None:
        self.script = script
        self.conns: list[UpstreamConn] = []
        self.accepted = asyncio.Queue[UpstreamConn]()
        self.server: asyncio.Server | None = None
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> ScriptedUpstream:
        self.server = await asyncio.start_server(self._accept, HOST, 0)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = UpstreamConn(reader, writer)
        self.conns.append(conn)
        self.accepted.put_nowait(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.script(conn)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except BaseException as exc:  # surfaced by the tests through ``errors``
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)

    async def next_conn(self, timeout: float = READ_TIMEOUT) -> UpstreamConn:
        return await asyncio.wait_for(self.accepted.get(), timeout)

    @property
    def all_received(self) -> bytes:
        return b"".join(c.received for c in self.conns)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in self.conns:
            conn.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)


# --------------------------------------------------------------------------- client


class RawClient:
    """A client socket that sends exact bytes and reads responses without normalising."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.io = ByteReader(reader)
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection(HOST, port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_only: bool = False, timeout: float = READ_TIMEOUT) -> Message:
        return await self.io.message(request=False, head_only=head_only, timeout=timeout)

    async def get(self, target: bytes = b"/", extra: bytes = b"") -> Message:
        await self.send(b"GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n" % (target, extra))
        return await self.response()

    async def eof(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Read until the proxy closes; returns any bytes that came before the close. The
        client's side is closed too: the connection is over."""
        try:
            return await self.io.rest(timeout)
        except ConnectionResetError:
            return b""
        finally:
            self.writer.close()

    async def assert_closed(self, timeout: float = READ_TIMEOUT) -> None:
        extra = await self.eof(timeout)
        assert extra == b"", f"unexpected bytes before close: {extra[:200]!r}"

    def half_close(self) -> None:
        self.writer.write_eof()

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


# ---------------------------------------------------------------------------- proxy


@dataclass
class ProxyUnderTest:
    """The engine in-process: ``HttpServer`` on loopback with a forwarding handler."""

    server: HttpServer
    pool: UpstreamPool
    statuses: list[int] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    async def client(self) -> RawClient:
        return await RawClient.connect(self.port)

    async def close(self) -> None:
        await self.server.shutdown(grace=0.5)
        self.pool.close()


def forwarding_handler(
    pool: UpstreamPool,
    port: int,
    record: ProxyUnderTest | None = None,
    rewrite: Rewrite = NO_REWRITE,
) -> Handler:
    async def handler(ex: Exchange) -> None:
        if record is not None:
            record.exchanges.append(ex)
        status = await forward(ex, pool, HOST, port, rewrite)
        if record is not None:
            record.statuses.append(status)

    return handler


async def start_proxy(
    upstream_port: int,
    limits: ServerLimits | None = None,
    handler: Callable[[ProxyUnderTest], Handler] | None = None,
    pool: UpstreamPool | None = None,
) -> ProxyUnderTest:
    """Start the engine forwarding to ``upstream_port`` (or running ``handler(put)``)."""
    pool = pool or UpstreamPool()
    holder: list[ProxyUnderTest] = []

    async def dispatch(ex: Exchange) -> None:
        await chosen(ex)

    server = HttpServer(dispatch, limits)
    put = ProxyUnderTest(server, pool)
    holder.append(put)
    chosen = handler(put) if handler is not None else forwarding_handler(pool, upstream_port, put)
    await server.start(HOST, 0)
    return put


class EngineRig:
    """Builds upstreams, proxies and clients for one test, and tears all of them down."""

    def __init__(self) -> None:
        self.upstreams: list[ScriptedUpstream] = []
        self.proxies: list[ProxyUnderTest] = []
        self.clients: list[RawClient] = []

    async def upstream(self, script: Script = serve_ok) -> ScriptedUpstream:
        up = await ScriptedUpstream(script).start()
        self.upstreams.append(up)
        return up

    async def proxy(
        self,
        upstream_port: int,
        limits: ServerLimits | None = None,
        handler: Callable[[ProxyUnderTest], Handler] | None = None,
        pool: UpstreamPool | None = None,
    ) -> ProxyUnderTest:
        put = await start_proxy(upstream_port, limits, handler, pool)
        self.proxies.append(put)
        return put

    async def client(self, port: int, *, rcvbuf: int | None = None) -> RawClient:
        client = await RawClient.connect(port, rcvbuf=rcvbuf)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            client.writer.transport.abort()
        for put in self.proxies:
            await put.close()
        for up in self.upstreams:
            await up.close()
        for up in self.upstreams:
            if up.errors:
                raise up.errors[0]
