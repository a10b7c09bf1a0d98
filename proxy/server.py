"""Starting and stopping an engine server, with a graceful drain.

``HttpServer`` owns the listening sockets, the set of live connections and the one sweeper
task that enforces head-read and keep-alive timeouts for all of them. ``shutdown`` stops
listening, closes idle connections, lets in-flight exchanges finish (each response then
carries ``Connection: close``) and, after ``grace`` seconds, cuts what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Protocol

from proxy.http1 import Handler, HttpServerProtocol, ServerContext
from proxy.limits import ServerLimits

__all__ = ["Connection", "HttpServer"]


class Connection(Protocol):
    """A client connection as the server sees it, whatever its protocol: HTTP/1.1
    (``proxy.http1``) or HTTP/2 (``proxy.http2``), which a connection may switch to."""

    transport: asyncio.Transport | None

    @property
    def idle(self) -> bool: ...
    @property
    def tunnelled(self) -> bool: ...
    def close(self) -> None: ...
    def check_timeouts(self, now: float) -> None: ...


_SWEEP_INTERVAL = 1.0


class HttpServer:
    """One handler served on one or more listening sockets."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self.limits = limits or ServerLimits()
        self._handler = handler
        self._servers: list[asyncio.Server] = []
        self._ctx: ServerContext | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"HttpServer(addresses={self.addresses}, connections={self.connection_count})"

    @property
    def connection_count(self) -> int:
        return len(self._ctx.connections) if self._ctx else 0

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    async def start(
        self,
        host: str | None,
        port: int,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        backlog: int = 2048,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Listen on ``host:port`` (all interfaces when host is None or empty).

        Call again to listen on more addresses with the same handler (for example the
        same service over TLS with ``ssl_context``).
        """
        loop = asyncio.get_running_loop()
        if self._ctx is None:
            self._ctx = ServerContext(self._handler, self.limits, loop)
        ctx = self._ctx
        if sock is not None:
            server = await loop.create_server(
                lambda: HttpServerProtocol(ctx), sock=sock, backlog=backlog, ssl=ssl_context
            )
        else:
            server = await loop.create_server(
                lambda: HttpServerProtocol(ctx),
                host or None,
                port,
                reuse_port=reuse_port or None,
                reuse_address=True,
                backlog=backlog,
                ssl=ssl_context,
            )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        assert self._ctx is not None
        ctx = self._ctx
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            now = ctx.loop.time()
            for proto in list(ctx.connections):
                proto.check_timeouts(now)

    def stop_listening(self) -> None:
        for server in self._servers:
            server.close()

    async def shutdown(self, grace: float | None = None, tunnel_grace: float | None = None) -> None:
        """Stop accepting, finish in-flight exchanges, close everything.

        With ``grace`` None, wait for in-flight exchanges without limit (Knative's choice);
        otherwise cut the remaining connections after ``grace`` seconds. Tunnelled
        connections (websockets) get ``tunnel_grace`` seconds, if given, then are cut
        (Knative HEAD gives hijacked connections 60 s after its servers shut down).
        """
        self.stop_listening()
        ctx = self._ctx
        if ctx is not None:
            ctx.closing = True
            for proto in list(ctx.connections):
                if proto.idle:
                    proto.close()
            loop = asyncio.get_running_loop()
            now = loop.time()
            deadline = None if grace is None else now + grace
            tunnel_deadline = None if tunnel_grace is None else now + tunnel_grace
            while ctx.connections:
                now = loop.time()
                if deadline is not None and now >= deadline:
                    for proto in list(ctx.connections):
                        if proto.transport is not None:
                            proto.transport.abort()
                    break
                for proto in list(ctx.connections):
                    if proto.idle:
                        proto.close()
                    elif (
                        tunnel_deadline is not None
                        and now >= tunnel_deadline
                        and proto.tunnelled
                        and proto.transport is not None
                    ):
                        proto.transport.abort()
                await asyncio.sleep(0.05)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
