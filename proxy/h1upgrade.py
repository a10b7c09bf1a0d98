"""Upgrades of an HTTP/1.1 client connection: to h2c (``Upgrade: h2c`` answered 101, or the
HTTP/2 preface on a fresh connection, handed to ``proxy.http2``), and an upgrade request
with a body, served as a plain request (``proxy.http1.HttpServerProtocol`` builds on it).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import cast

from proxy.errors import BadRequest, PayloadTooLarge
from proxy.exchange import Exchange
from proxy.h1io import ConnectionIO
from proxy.headers import HeaderList
from proxy.states import ConnState

__all__ = ["Upgrades"]

_CLOSED = ConnState.CLOSED

#: An ``Upgrade: h2c`` request answered 101, per connection: (HTTP2-Settings, method, target,
#: headers), served as stream 1 once llhttp hands over the bytes after it. Not an
#: attribute: each attribute of a connection costs every request (see its ``__init__``).
_H2C: weakref.WeakKeyDictionary[Upgrades, tuple[bytes, bytes, bytes, HeaderList]] = (
    weakref.WeakKeyDictionary()
)


class Upgrades(ConnectionIO):
    """Upgrade handling; the attributes are ``HttpServerProtocol``'s (see ``ConnectionIO``)."""

    _parsing: Exchange | None
    _head_bytes: int

    def _upgrade_with_body(self, ex: Exchange) -> None:
        """An upgrade request with a body (``curl --http2 -d``: an h2c upgrade): llhttp
        switches at its head and would never deliver the body, so the upgrade is declined
        (RFC 9110 section 7.8 lets a server ignore Upgrade) and the request is served as
        a plain one whose Content-Length body is counted off the bytes after the head. A
        chunked one is refused at once. Either way it is the connection's last request."""
        if ex.chunked:
            raise BadRequest("upgrade request with a chunked body")
        ex.upgrade = False
        ex.keep_alive = False
        # Every later byte goes to ``_raw_body``, as a tunnel's would (no attribute of its
        # own: see ``__init__``); ``_parsing`` stays ``ex`` until its body is whole.
        self._tunnel_data = self._raw_body

    def _raw_body(self, data: bytes) -> None:
        """Body bytes of ``_parsing``, an upgrade declined (see ``_upgrade_with_body``); any
        after it are dropped, as after every connection's last request."""
        ex = self._parsing
        if ex is None:  # whole already: the rest is dropped
            self._head_bytes += len(data)
            if self._head_bytes > self.ctx.limits.body_high_water:
                self.pause_reading()
            return
        remaining = (ex.content_length or 0) - ex.body_received
        chunk = data[:remaining]
        if chunk:
            remaining -= len(chunk)
            limit = self.ctx.limits.max_body_bytes
            if limit is not None and ex.body_received + len(chunk) > limit:
                self._parsing = None
                ex.body_failed(PayloadTooLarge("request body too large"))
                self.pause_reading()
                return
            ex.push_body(chunk)
        if remaining == 0:
            self._parsing = None
            ex.body_complete = True
            ex.wake_body()
        self._head_bytes += len(data) - len(chunk)  # dropped (see ``data_received``)
        if self._head_bytes > self.ctx.limits.body_high_water:
            self.pause_reading()

    # ------------------------------------------------------------------ HTTP/2

    def _h2c_upgrade(self, ex: Exchange) -> bool:
        """Whether ``proxy.http2.accept_upgrade`` took an ``Upgrade: h2c`` (and wrote 101)."""
        from proxy.h2upgrade import accept_upgrade

        upgrade = accept_upgrade(ex, self.ctx, alone=self._current is None)
        if upgrade is None:
            return False
        _H2C[self] = upgrade
        return True

    def _switched_to_h2(self, rest: bytes) -> bool:
        """After llhttp stopped at an upgrade: hand over to HTTP/2 if it was h2c's."""
        if self not in _H2C:
            return False
        self._switch_to_h2(rest)
        return True

    def _switch_to_h2(self, data: bytes) -> None:
        """Hand the transport to an HTTP/2 connection (``proxy.http2``) with ``data``."""
        from proxy.http2 import serve_h2

        self.resume_reading()
        self.ctx.connections.discard(self)
        self._to(_CLOSED)
        serve_h2(self.ctx, cast(asyncio.Transport, self.transport), data, _H2C.pop(self, None))
