"""What every connection of one listening server shares, and what a handler is.

A handler is ``async def handler(ex)``, run in a task per exchange; it may also offer the
task-free entry ``fast(ex) -> bool`` (``FastPath``, see ``proxy.http1``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from proxy.exchange import Exchange
from proxy.limits import ServerLimits

if TYPE_CHECKING:
    from proxy.http1 import HttpServerProtocol

__all__ = ["FastPath", "FlowListener", "Handler", "ServerContext"]

Handler = Callable[[Exchange], Awaitable[None]]


@runtime_checkable
class FastPath(Protocol):
    """A handler's optional task-free entry (see "The fast path" above)."""

    def fast(self, ex: Exchange) -> bool: ...


class FlowListener(Protocol):
    """Who is told when writes to the client pause (``flow(True)``) and resume."""

    def flow(self, paused: bool) -> None: ...


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
        self.connections: set[HttpServerProtocol] = set()
        self.closing = False
