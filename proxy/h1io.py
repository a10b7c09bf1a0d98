"""The transport side of an HTTP/1.1 client connection: writes, flow control, tunnels and
the sweeper's timeouts (``proxy.http1.HttpServerProtocol`` parses and runs exchanges on it).

Write idle: bytes that sat unmoved in the write buffer (ours plus the kernel's
unacknowledged ones) for ``ServerLimits.write_idle_timeout`` mean a client that stopped
reading; the connection is cut, a closing one too, so a drain always ends.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
import termios
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.errors import ProxyError, RequestTimeout
from proxy.exchange import ClientDisconnected
from proxy.states import ConnState

if TYPE_CHECKING:
    from proxy.context import FlowListener, ServerContext
    from proxy.exchange import Exchange

__all__ = ["ConnectionIO"]

log = logging.getLogger("sluice.http")

_IDLE, _HEAD, _BUSY, _LAST, _TUNNEL, _CLOSED = ConnState


_OUTQ = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ on Linux


def _kernel_unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes the kernel holds for the peer (sent or not, unacknowledged); 0 if unknown."""
    sock = transport.get_extra_info("socket")
    if _OUTQ is None or sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int.from_bytes(raw, sys.byteorder)


_NOTHING_UNSENT = (0, 0.0)
#: For each connection with bytes waiting to be written: their number at the last sweep that
#: saw it change, and when (``check_timeouts``). Kept here, not on the connection: few have
#: any, and each attribute of a connection costs every request (see its ``__init__``).
_UNSENT: weakref.WeakKeyDictionary[ConnectionIO, tuple[int, float]] = weakref.WeakKeyDictionary()


class ConnectionIO(asyncio.Protocol):
    """What an HTTP/1.1 connection does with its transport. The attributes are set by
    ``HttpServerProtocol.__init__`` (one place, where their cost per request is measured);
    ``_to`` and ``_reject`` are its."""

    ctx: ServerContext
    transport: asyncio.Transport | None
    state: ConnState
    state_since: float
    write_paused: bool
    flow_listener: FlowListener | None
    _reading_paused: bool
    _body_paused: bool
    _writable: asyncio.Future[None] | None
    _current: Exchange | None
    _pipeline: deque[Exchange]
    _tunnel_data: Callable[[bytes], None] | None
    _tunnel_close: Callable[[], None] | None
    _tunnel_eof: Callable[[], None] | None
    _upgrade_buffer: bytearray | None

    def _to(self, state: ConnState) -> None:
        raise NotImplementedError

    def _reject(self, error: ProxyError) -> None:
        raise NotImplementedError

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.flow_listener is not None:
            self.flow_listener.flow(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.flow_listener is not None:
            self.flow_listener.flow(False)

    async def wait_writable(self) -> None:
        if self.state is _CLOSED:
            raise ClientDisconnected("client connection lost")
        if not self.write_paused:
            return
        if self._writable is None or self._writable.done():
            self._writable = self.ctx.loop.create_future()
        await self._writable

    # --------------------------------------------------------------------- I/O

    def write_raw(self, data: bytes) -> None:
        if self.state is not _CLOSED and self.transport is not None:
            self.transport.write(data)

    def write_lines(self, parts: tuple[bytes, ...]) -> None:
        if self.state is not _CLOSED and self.transport is not None:
            self.transport.writelines(parts)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and self.state is not _CLOSED:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and self.state is not _CLOSED:
            self._reading_paused = False
            self.transport.resume_reading()

    def pause_body(self) -> None:
        self._body_paused = True
        self.pause_reading()

    def resume_body(self) -> None:
        if self._body_paused:
            self._body_paused = False
            if self._current is not None and not self._pipeline:
                self.resume_reading()

    def close(self) -> None:
        if self.transport is not None and self.state is not _CLOSED:
            self._to(_CLOSED)
            self.transport.close()

    def enter_tunnel(
        self,
        on_data: Callable[[bytes], None],
        on_close: Callable[[], None],
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        self._tunnel_data = on_data
        self._tunnel_close = on_close
        self._tunnel_eof = on_eof
        self._to(_TUNNEL)
        pending = self._upgrade_buffer
        self._upgrade_buffer = None
        if pending:
            on_data(bytes(pending))
        self.resume_reading()

    # ----------------------------------------------------------------- sweeper

    def check_timeouts(self, now: float) -> None:
        """Close the connection if it idled past keep-alive or dawdled over a request head;
        cut it if the client took no byte of what waits to be written for write-idle."""
        limits = self.ctx.limits
        transport = self.transport
        if transport is not None:
            unsent = transport.get_write_buffer_size()
            if unsent:
                # With the kernel's unacknowledged bytes: a client reading slowly frees
                # those long before the kernel asks for more of ours.
                unsent += _kernel_unsent(transport)
            if unsent == 0:
                _UNSENT.pop(self, None)
            elif unsent != _UNSENT.get(self, _NOTHING_UNSENT)[0]:
                _UNSENT[self] = (unsent, now)
            elif now - _UNSENT[self][1] > limits.write_idle_timeout:
                log.info("cutting a client that read nothing for %gs", limits.write_idle_timeout)
                transport.abort()
                return
        if self.state is _IDLE:
            if now - self.state_since > limits.keepalive_timeout or self.ctx.closing:
                self.close()
        elif self.state is _HEAD and now - self.state_since > limits.head_timeout:
            self._reject(RequestTimeout("request head read timeout"))

    @property
    def idle(self) -> bool:
        return self.state is _IDLE

    @property
    def tunnelled(self) -> bool:
        """Whether the connection was switched to a byte tunnel (websocket) by a 101."""
        return self.state is _TUNNEL
