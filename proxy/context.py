"""What every connection of one listening server shares, what a handler is, and how an
exchange is handed to it.

A handler is ``async def handler(ex)``, run in a task per exchange; it may also offer the
task-free entry ``fast(ex) -> bool`` (``FastPath``, see ``proxy.http1``). ``serve`` is the
one way an exchange reaches a handler, for HTTP/1.1 connections and HTTP/2 streams alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from proxy.errors import ProxyError
from proxy.exchange import Exchange, answer_error
from proxy.limits import ServerLimits

if TYPE_CHECKING:
    from proxy.server import Connection

__all__ = ["Carrier", "FastPath", "FlowListener", "Handler", "ServerContext", "serve"]

Handler = Callable[[Exchange], Awaitable[None]]


@runtime_checkable
class FastPath(Protocol):
    """A handler's optional task-free entry (see "The fast path" above)."""

    def fast(self, ex: Exchange) -> bool: ...


class FlowListener(Protocol):
    """Who is told when writes to the client pause (``flow(True)``) and resume."""

    def flow(self, paused: bool) -> None: ...


class Carrier(Protocol):
    """What carries an exchange: an HTTP/1.1 connection (``proxy.http1``) or one HTTP/2
    stream (``proxy.http2``). Everything an exchange, a handler or ``proxy.forward`` asks
    of the client side goes through these, so that both protocols serve the same handlers.
    """

    ctx: ServerContext
    peer: str
    peer_port: int
    #: Told when writes to the client pause and resume (the upstream side of the exchange).
    flow_listener: FlowListener | None

    @property
    def write_paused(self) -> bool: ...
    def write_raw(self, data: bytes) -> None: ...
    def write_lines(self, parts: tuple[bytes, ...]) -> None: ...
    async def wait_writable(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def close(self) -> None: ...
    def exchange_over(self, ex: Exchange) -> None: ...
    def enter_tunnel(
        self,
        on_data: Callable[[bytes], None],
        on_close: Callable[[], None],
        on_eof: Callable[[], None] | None = None,
    ) -> None: ...


class ServerContext:
    """What all connections of one listening server share."""

    __slots__ = ("closing", "connections", "fast", "handler", "limits", "loop")

    def __init__(
        self, handler: Handler, limits: ServerLimits, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.handler = handler
        #: The handler's task-free entry, if it has one (``FastPath``).
        self.fast: Callable[[Exchange], bool] | None = (
            handler.fast if isinstance(handler, FastPath) else None
        )
        self.limits = limits
        self.loop = loop
        self.connections: set[Connection] = set()
        self.closing = False


def serve(ctx: ServerContext, ex: Exchange) -> None:
    """Hand ``ex`` to the handler: its fast entry first, else a task running ``run``.

    A fast owner takes the exchange when ``fast(ex)`` returns True and finishes it later
    with ``Exchange.complete()``; it must not finish it before returning, and an error it
    raises is answered from a task instead.
    """
    fast = ctx.fast
    if fast is not None and ex.preset_error is None:
        try:
            if fast(ex):
                return
        except ProxyError as exc:
            ex.preset_error = exc
    ex.task = ctx.loop.create_task(run(ctx, ex))


async def run(ctx: ServerContext, ex: Exchange) -> None:
    """The task path: answer a preset error or await the handler, map what it raised to a
    response (``answer_error``), make sure an answer went out, and free the carrier."""
    try:
        if ex.preset_error is not None:
            ex.fail(ex.preset_error)
        else:
            await ctx.handler(ex)
    except (Exception, asyncio.CancelledError) as exc:
        answer_error(ex, exc)
    finally:
        ex.ensure_answered()
        ex.conn.exchange_over(ex)
