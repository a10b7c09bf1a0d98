"""Connections to upstreams, pooled per destination.

HTTP/1.1: the pool decides synchronously (reuse the most recently used idle connection, or
dial), then does I/O. A connection comes back through ``release`` after each exchange and is
kept only when that exchange ended cleanly (``UpstreamConnection.reusable``).

HTTP/2 (``proxy.h2client``): one multiplexed connection per destination serves every call
while it has room under the upstream's stream limit; another is dialed when all are full,
and one that said GOAWAY is dropped. ``release`` lets a call go (``H2Call.close``).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from proxy.client import Upstream, UpstreamConnection
from proxy.errors import BadGateway

if TYPE_CHECKING:
    from proxy.h2client import H2Call, H2Upstream

_P = TypeVar("_P", bound=asyncio.Protocol)

__all__ = ["UpstreamPool"]

# Dial retry on timeouts only (connection refused is final): start at 50 ms, grow 1.4x.
_DIAL_FIRST_TIMEOUT = 0.05
_DIAL_BACKOFF = 1.4
_DIAL_STEPS = 15


class UpstreamPool:
    """Keep-alive connections per ``(host, port)``, at most ``max_idle_per_host`` idle each."""

    def __init__(self, *, max_idle_per_host: int = 100, idle_timeout: float = 90.0) -> None:
        if max_idle_per_host < 0:
            raise ValueError("max_idle_per_host must be >= 0")
        self.max_idle_per_host = max_idle_per_host
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, int], deque[UpstreamConnection]] = {}
        self._h2: dict[tuple[str, int], list[H2Upstream]] = {}
        #: The h2c dial under way per destination, shared by the calls waiting for room.
        self._h2_dialing: dict[tuple[str, int], asyncio.Task[H2Upstream]] = {}
        self._closed = False

    def __repr__(self) -> str:
        idle = sum(len(q) for q in self._idle.values())
        return f"UpstreamPool(hosts={len(self._idle)}, idle={idle})"

    def idle_count(self, host: str, port: int) -> int:
        return len(self._idle.get((host, port), ()))

    async def acquire(self, host: str, port: int) -> UpstreamConnection:
        """A connection to ``host:port``: the freshest idle one, or a new one."""
        return self.take_idle(host, port) or await self.connect(host, port)

    def take_idle(self, host: str, port: int) -> UpstreamConnection | None:
        """The most recently used live idle connection to ``host:port``, if any."""
        idle = self._idle.get((host, port))
        if idle:
            now = idle[-1].clock()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.idle_timeout:
                    return conn
                conn.close()
        return None

    async def connect(self, host: str, port: int) -> UpstreamConnection:
        """Dial a new connection, retrying only dial timeouts with growing limits."""
        loop = asyncio.get_running_loop()
        return await self._dial(host, port, lambda: UpstreamConnection(self, (host, port), loop))

    def take(self, host: str, port: int, h2: bool) -> Upstream | None:
        """A pooled upstream for one request to ``host:port``: with ``h2`` a call on an h2c
        connection with room for it, else an idle HTTP/1.1 connection; None: dial."""
        return self.take_h2(host, port) if h2 else self.take_idle(host, port)

    def take_h2(self, host: str, port: int) -> H2Call | None:
        """A call on a live h2c connection to ``host:port`` with room for one more stream."""
        for conn in self._h2.get((host, port), ()):
            if conn.has_room:
                return conn.call()
        return None

    async def connect_h2(self, host: str, port: int) -> H2Call:
        """A call on a new h2c connection (kept for the calls after it). Calls that find
        no room while a dial to the same destination is under way wait for that one
        connection instead of dialing their own (a burst of streams would otherwise open
        a connection each); when it is full, the next caller dials another."""
        key = (host, port)
        while True:
            dial = self._h2_dialing.get(key)
            if dial is None:
                dial = self._h2_dialing[key] = asyncio.get_running_loop().create_task(
                    self._dial_h2(key)
                )
            # Shielded: one waiter giving up must not cancel the dial the others share.
            conn = await asyncio.shield(dial)
            if conn.has_room:
                return conn.call()

    async def _dial_h2(self, key: tuple[str, int]) -> H2Upstream:
        from proxy.h2client import H2Upstream  # loaded only when HTTP/2 is spoken

        loop = asyncio.get_running_loop()
        try:
            conn = await self._dial(key[0], key[1], lambda: H2Upstream(self, key, loop))
        finally:
            del self._h2_dialing[key]
        if self._closed:
            conn.close()
            raise BadGateway("upstream pool closed")
        self._h2.setdefault(key, []).append(conn)
        return conn

    def forget_h2(self, conn: H2Upstream) -> None:
        conns = self._h2.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)

    async def _dial(self, host: str, port: int, factory: Callable[[], _P]) -> _P:
        loop = asyncio.get_running_loop()
        timeout = _DIAL_FIRST_TIMEOUT
        started = loop.time()
        for step in range(_DIAL_STEPS):
            try:
                transport, proto = await asyncio.wait_for(
                    loop.create_connection(factory, host, port), timeout
                )
            except TimeoutError:
                if step == _DIAL_STEPS - 1:
                    break
                timeout *= _DIAL_BACKOFF * (1 + random.random() * 0.1)
                await asyncio.sleep(0.03 * (1 + random.random() * 0.1))
                continue
            except ConnectionRefusedError:
                raise BadGateway(f"dial tcp {host}:{port}: connect: connection refused") from None
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise BadGateway(f"dial tcp {host}:{port}: {reason.lower()}") from None
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return proto
        elapsed = loop.time() - started
        raise BadGateway(f"timed out dialing {host}:{port} after {elapsed:.2f}s")

    def release(self, conn: Upstream) -> None:
        """Return ``conn`` after an exchange: kept if it ended cleanly, else closed (an
        HTTP/2 call is never kept: its connection is)."""
        if not conn.reusable or conn.closed or self._closed:
            conn.close()
            return
        assert isinstance(conn, UpstreamConnection)  # an H2Call is never reusable
        idle = self._idle.get(conn.key)
        if idle is None:  # not setdefault(): that would build a deque on every call
            idle = self._idle[conn.key] = deque()
        if len(idle) >= self.max_idle_per_host:
            conn.close()
            return
        if conn.reading_paused:
            # A slow client paused it during the last read of the response: an idle
            # connection must read, or it would hang the next request and miss a FIN.
            conn.resume_reading()
        conn.idle_since = conn.clock()
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None:
            try:
                idle.remove(conn)
            except ValueError:
                pass

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
        for conns in self._h2.values():
            for conn in list(conns):
                conn.close()
        self._h2.clear()
