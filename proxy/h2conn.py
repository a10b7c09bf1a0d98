"""Starting HTTP/2: an h2 connection as the engine uses it on both sides
(``new_connection``), and the HTTP/1.1 ``Upgrade: h2c`` handshake (``accept_upgrade``).

Bytes header names and values; HPACK with the static table only (``_StaticEncoder``); and no
second check of the headers the engine sends (it lower-cases names and drops
connection-specific fields itself: ``proxy.h2stream``, ``proxy.request_head``). What a peer
sends is still validated by h2.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import hpack
import hyperframe.exceptions
from hpack.table import HeaderTable
from hyperframe.frame import SettingsFrame

from proxy.headers import HOP_BY_HOP, HeaderList, connection_tokens
from proxy.hpack_int import encode_integer

if TYPE_CHECKING:
    from proxy.context import ServerContext
    from proxy.exchange import Exchange

__all__ = ["SWITCHING", "accept_upgrade", "h2c_settings_valid", "new_connection"]


class _StaticEncoder(hpack.Encoder):
    """HPACK with the static table only: every field is an indexed static entry or a
    literal never added to the dynamic table, without Huffman coding. A field's bytes
    then depend on the field alone, so they are computed once per distinct field
    (``_FIELDS``) instead of per header block: pure-Python HPACK encoding was a fifth of
    an h2c request's CPU (bench.h2load, cProfile); the larger blocks cost nothing that
    shows on loopback or a pod network."""

    def encode(self, headers: object, huffman: bool = False) -> bytes:
        parts = []
        if self.table_size_changes:  # the peer's SETTINGS_HEADER_TABLE_SIZE, acknowledged
            for size in self.table_size_changes:
                parts.append(encode_integer(size, 5, 0x20))
            self.table_size_changes = []
        fields = _FIELDS
        for field in headers:  # type: ignore[attr-defined]
            name, value = field[0], field[1]
            piece = fields.get((name, value))
            if piece is None:
                piece = _field(name, value)
                if len(fields) < _MAX_FIELDS:
                    fields[(name, value)] = piece
            parts.append(piece)
        return b"".join(parts)


#: Encoded fields by (name, value), shared by every connection (they hold no state).
_FIELDS: dict[tuple[bytes, bytes], bytes] = {}
_MAX_FIELDS = 4096
_STATIC_FULL = {entry: i for i, entry in enumerate(HeaderTable.STATIC_TABLE, 1)}
_STATIC_NAME: dict[bytes, int] = {}
for _i, (_name, _) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAME.setdefault(_name, _i)


def _field(name: bytes, value: bytes) -> bytes:
    index = _STATIC_FULL.get((name, value))
    if index is not None:
        return encode_integer(index, 7, 0x80)  # indexed header field
    name_index = _STATIC_NAME.get(name)
    literal = encode_integer(len(value), 7, 0) + value  # no Huffman
    if name_index is not None:  # literal without indexing, indexed name
        return encode_integer(name_index, 4, 0) + literal
    return b"\x00" + encode_integer(len(name), 7, 0) + name + literal


def new_connection(client_side: bool) -> h2.connection.H2Connection:
    """A new h2 connection for the server (``proxy.http2``) or client side
    (``proxy.h2client``), as the module docstring says."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.encoder = _StaticEncoder()
    return conn


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
        SettingsFrame(0).parse_body(memoryview(body))
    except (ValueError, hyperframe.exceptions.HyperframeError):
        return False
    return True
