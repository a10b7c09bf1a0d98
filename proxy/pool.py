"""Keep-alive connections to upstreams, pooled per destination.

The pool decides synchronously (reuse the most recently used idle connection, or dial), then
does I/O. A connection comes back through ``release`` after each exchange and is kept only
when that exchange ended cleanly (``UpstreamConnection.reusable``).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import deque

from proxy.client import UpstreamConnection
from proxy.errors import BadGateway

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
        key = (host, port)
        timeout = _DIAL_FIRST_TIMEOUT
        started = loop.time()
        for step in range(_DIAL_STEPS):
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: UpstreamConnection(self, key, loop), host, port),
                    timeout,
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
            sock = proto.transport.get_extra_info("socket") if proto.transport else None
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return proto
        elapsed = loop.time() - started
        raise BadGateway(f"timed out dialing {host}:{port} after {elapsed:.2f}s")

    def release(self, conn: UpstreamConnection) -> None:
        """Return ``conn`` after an exchange: kept if it ended cleanly, else closed."""
        if not conn.reusable or conn.closed or self._closed:
            conn.close()
            return
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
