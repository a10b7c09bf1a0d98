"""What the upstream side of the engine looks like to ``proxy.forward``, whatever the protocol.

``Upstream`` is one exchange's carrier: an HTTP/1.1 ``proxy.client.UpstreamConnection`` or
an HTTP/2 ``proxy.h2client.H2Call``. The response flows into a ``ResponseSink``; a failure
is an ``UpstreamClosed`` (a ``NotProcessed`` one may be sent again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from proxy.errors import BadGateway
from proxy.headers import HeaderList

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.request_head import Rewrite

__all__ = ["NotProcessed", "ResponseSink", "Upstream", "UpstreamClosed"]


class ResponseSink(Protocol):
    """Where an upstream response goes, one call per event, in order.

    Headers handed over are the end-to-end ones, as received: the hop-by-hop ones (and
    those a ``Connection`` header names) and Content-Length never reach a sink; the length
    comes as ``content_length`` and a 101's Upgrade value as ``upgrade``.
    """

    def on_informational(self, status: int, headers: HeaderList) -> None: ...
    def on_head(self, status: int, headers: HeaderList, content_length: int | None) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_upgrade(self, headers: HeaderList, upgrade: bytes, rest: bytes) -> None: ...
    def on_trailers(self, headers: HeaderList) -> None: ...
    def flush(self) -> None: ...


class Upstream(Protocol):
    """One upstream exchange's carrier as ``proxy.forward`` drives it: an HTTP/1.1
    ``UpstreamConnection``, or an HTTP/2 stream (``proxy.h2client.H2Call``)."""

    requests: int
    reusable: bool
    reading_paused: bool
    closed: bool
    #: Whether it is one stream of a shared HTTP/2 connection (never pooled itself).
    multiplexed: bool

    @property
    def authority(self) -> bytes: ...
    @property
    def got_head(self) -> bool: ...
    @property
    def untouched(self) -> bool:
        """Whether no byte of an answer arrived (HTTP/1.1's replay rule; an HTTP/2 stream
        never says so: its own refusals say ``NotProcessed``)."""

    def begin(
        self, sink: ResponseSink, is_head: bool, callback: Callable[[BaseException | None], None]
    ) -> None: ...
    def send_head(self, ex: Exchange, rewrite: Rewrite) -> None: ...
    def send_body(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def end_body(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def enter_tunnel(
        self,
        sink: ResponseSink,
        on_close: Callable[[], None],
        flow: Callable[[bool], None] | None = None,
    ) -> None: ...


class UpstreamClosed(BadGateway):
    """The upstream connection ended before the response was complete."""


class NotProcessed(UpstreamClosed):
    """The upstream refused an HTTP/2 stream or said (GOAWAY) it never processed it: safe
    to send again on another connection, whatever the method."""
