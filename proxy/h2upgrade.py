"""Starting HTTP/2 from HTTP/1.1: the ``Upgrade: h2c`` handshake (``accept_upgrade``)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from proxy.h2frames import H2Error, check_settings, decode_settings
from proxy.headers import HOP_BY_HOP, HeaderList, connection_tokens

if TYPE_CHECKING:
    from proxy.context import ServerContext
    from proxy.exchange import Exchange

__all__ = ["SWITCHING", "accept_upgrade", "h2c_settings_valid"]


#: The answer to an ``Upgrade: h2c`` request that is taken.
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


def accept_upgrade(
    ex: Exchange, ctx: ServerContext, alone: bool
) -> tuple[bytes, bytes, bytes, HeaderList] | None:
    """Whether an HTTP/1.1 ``Upgrade`` request switches to h2c (RFC 7540 section 3.2): a
    bodiless HTTP/1.1 request, ``alone`` on its connection, with a valid HTTP2-Settings.
    Writes the 101 and returns what ``serve_h2`` serves as stream 1, or None: an h2c
    upgrade not taken is served on HTTP/1.1 without it (as the RFC allows), never
    tunnelled upstream."""
    upgrade = ex.header(b"upgrade")
    if upgrade is None or b"h2c" not in [t.strip().lower() for t in upgrade.split(b",")]:
        return None
    ex.upgrade = False
    settings = ex.header(b"http2-settings")
    if (
        not ctx.limits.h2c
        or settings is None
        or not ex.body_complete
        or ex.version != "1.1"
        or not alone
        or ctx.closing
        or not h2c_settings_valid(settings)
    ):
        return None
    named = connection_tokens(ex.headers)
    headers = [
        (name, value)
        for (name, value), low in zip(ex.headers, ex.names, strict=True)
        if low not in HOP_BY_HOP and low not in named and low != b"http2-settings"
    ]
    ex.conn.write_raw(SWITCHING)
    return settings, ex.method, ex.target, headers


def h2c_settings_valid(value: bytes) -> bool:
    """Whether an ``HTTP2-Settings`` header decodes as a SETTINGS payload (checked before
    the 101 goes out, so that a bad one leaves the request on HTTP/1.1)."""
    try:
        body = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
        check_settings(decode_settings(body))
    except (ValueError, binascii.Error, H2Error):
        return False
    return True
