"""HPACK and header checks for the HTTP/2 codec (``proxy.h2codec``).

* ``StaticEncoder``: what the engine sends, from the static table only (no dynamic-table
  state, no Huffman), each distinct field encoded once per process.
* ``BlockDecoder``: what a peer sends, decoded by the ``hpack`` library's ``Decoder`` and
  then checked (``check_fields``); a block that left the decoder's dynamic table as it was
  gives the same fields every time, so its checked result is kept by its bytes and the next
  identical block is a dictionary lookup. A client sending the same request over and over
  (h2load, a gRPC stub) sends identical blocks after the first: decoding and checking every
  one was about a third of an h2c request's CPU (bench.h2load, py-spy; docs/design.md).
"""

from __future__ import annotations

import re

import hpack
import hpack.exceptions
import hpack.hpack
from hpack.table import HeaderTable

from proxy.headers import HeaderList

__all__ = [
    "IGNORED",
    "REQUEST",
    "RESPONSE",
    "TRAILERS",
    "BlockDecoder",
    "HeaderError",
    "StaticEncoder",
    "check_fields",
    "encode_integer",
]

# What a header block is for: each has its own rules (RFC 9113 section 8.3); an IGNORED one
# is decoded only to keep the dynamic table in step.
REQUEST, RESPONSE, TRAILERS, IGNORED = 0, 1, 2, 3


class HeaderError(Exception):
    """A header block that is malformed (a stream error) or undecodable (``fatal``: the
    decoder's state is lost, a connection error ``code``)."""

    def __init__(self, message: str, fatal: bool = False, code: int = 0x1) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.code = code


class StaticEncoder:
    """HPACK with the static table only: every field is an indexed static entry or a literal
    never added to the dynamic table, without Huffman coding. A field's bytes then depend on
    the field alone, so they are computed once per distinct field (``_FIELDS``): pure-Python
    HPACK encoding was a fifth of an h2c request's CPU; the larger blocks cost nothing that
    shows on loopback or a pod network."""

    __slots__ = ("size_updates",)

    def __init__(self) -> None:
        #: Peer SETTINGS_HEADER_TABLE_SIZE values to acknowledge in the next block.
        self.size_updates: list[int] = []

    def encode(self, fields: HeaderList) -> bytes:
        parts = []
        if self.size_updates:
            # This encoder never uses the dynamic table; a size the peer set is still
            # acknowledged at the start of the next block (RFC 7541 section 4.2).
            parts += [encode_integer(min(size, 4096), 5, 0x20) for size in self.size_updates]
            self.size_updates = []
        known = _FIELDS
        for field in fields:
            piece = known.get(field)
            if piece is None:
                piece = _field(field[0], field[1])
                if len(known) < _MAX_FIELDS:
                    known[field] = piece
            parts.append(piece)
        return b"".join(parts)


#: Encoded fields by (name, value), shared by every connection (they hold no state).
_FIELDS: dict[tuple[bytes, bytes], bytes] = {}
_MAX_FIELDS = 4096
_STATIC_FULL = {entry: i for i, entry in enumerate(HeaderTable.STATIC_TABLE, 1)}
_STATIC_NAME: dict[bytes, int] = {}
for _i, (_name, _) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAME.setdefault(_name, _i)


def encode_integer(value: int, prefix: int, flags: int = 0) -> bytes:
    """``value`` with a ``prefix``-bit prefix, the other bits of the first byte ``flags``."""
    out = hpack.hpack.encode_integer(value, prefix)
    out[0] |= flags
    return bytes(out)


def _field(name: bytes, value: bytes) -> bytes:
    index = _STATIC_FULL.get((name, value))
    if index is not None:
        return encode_integer(index, 7, 0x80)  # indexed header field
    name_index = _STATIC_NAME.get(name)
    literal = encode_integer(len(value), 7, 0) + value  # no Huffman
    if name_index is not None:  # literal without indexing, indexed name
        return encode_integer(name_index, 4, 0) + literal
    return b"\x00" + encode_integer(len(name), 7, 0) + name + literal


class _Table(HeaderTable):
    """The decoder's dynamic table, counting the entries added (``generation``)."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)


#: Checked blocks one connection remembers (a client's few distinct requests).
_MAX_BLOCKS = 64


class BlockDecoder:
    """Decodes and checks one connection's inbound header blocks (the module docstring)."""

    __slots__ = ("_blocks", "_decoder", "_table", "limit")

    def __init__(self, max_header_list_size: int) -> None:
        self.limit = max_header_list_size
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._table = _Table()
        self._decoder.header_table = self._table
        self._blocks: dict[tuple[int, bytes], tuple[HeaderList, int | None]] = {}

    def decode(self, block: bytes, kind: int) -> tuple[HeaderList, int | None]:
        """(fields, Content-Length) of ``block``; raises ``HeaderError``."""
        hit = self._blocks.get((kind, block))
        if hit is not None:
            return hit
        table = self._table
        before = table.generation, table.maxsize
        try:
            fields: HeaderList = [(f[0], f[1]) for f in self._decoder.decode(block, raw=True)]
        except hpack.exceptions.OversizedHeaderListError as exc:
            raise HeaderError(str(exc), fatal=True, code=0xB) from exc  # ENHANCE_YOUR_CALM
        except (hpack.exceptions.HPACKError, ValueError, IndexError) as exc:
            raise HeaderError(f"HPACK: {exc}", fatal=True, code=0x9) from exc
        result = fields, (check_fields(fields, kind) if kind != IGNORED else None)
        if (table.generation, table.maxsize) == before:
            if len(self._blocks) >= _MAX_BLOCKS:
                self._blocks.clear()
            self._blocks[(kind, block)] = result
        else:
            self._blocks.clear()  # what earlier blocks referred to may have moved
        return result


# --- the checks (RFC 9113 section 8.2 and 8.3) ---------------------------------------------

_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_VALUE_BAD = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})


def check_fields(fields: HeaderList, kind: int) -> int | None:
    """Raise ``HeaderError`` unless ``fields`` are a well-formed request, response or
    trailer block; returns its Content-Length (None when absent)."""
    seen: set[bytes] = set()
    regular = False
    length: int | None = None
    authority = host = None
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                raise HeaderError(f"pseudo-header {name!r} after a regular field")
            if kind == REQUEST:
                allowed = name in _REQUEST_PSEUDO
            else:
                allowed = kind == RESPONSE and name == b":status"
            if not allowed or name in seen:
                raise HeaderError(f"pseudo-header {name!r} not allowed here")
            seen.add(name)
            if name == b":authority":
                authority = value
        else:
            regular = True
            if not _NAME.match(name):
                raise HeaderError(f"invalid header name {name!r}")
            if name in _CONNECTION_SPECIFIC:
                raise HeaderError(f"connection-specific header {name!r}")
            if name == b"te" and value.lower() != b"trailers":
                raise HeaderError("te other than trailers")
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise HeaderError("invalid content-length")
                length = int(value)
            elif name == b"host":
                host = value
        if _VALUE_BAD.search(value):
            raise HeaderError(f"invalid value of {name!r}")
    if kind == REQUEST:
        _check_request(fields, seen, authority, host)
    elif kind == RESPONSE and b":status" not in seen:
        raise HeaderError("response without :status")
    return length


def _check_request(
    fields: HeaderList, seen: set[bytes], authority: bytes | None, host: bytes | None
) -> None:
    method = next((v for n, v in fields if n == b":method"), None)
    if method is None:
        raise HeaderError("request without :method")
    if method == b"CONNECT":
        if b":authority" not in seen or b":scheme" in seen or b":path" in seen:
            raise HeaderError("malformed CONNECT request")
        return
    if b":scheme" not in seen or b":path" not in seen:
        raise HeaderError("request without :scheme or :path")
    if not next(v for n, v in fields if n == b":path"):
        raise HeaderError("empty :path")
    if authority is not None and host is not None and authority != host:
        raise HeaderError(":authority and host differ")
