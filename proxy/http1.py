"""The HTTP/1.1 server side of the engine: one ``asyncio.Protocol`` per client connection.

Theory of operation (``docs/design.md`` has the whole request path)
-------------------------------------------------------------------
llhttp (through httptools) parses the byte stream; the protocol turns each parsed request into
an ``Exchange`` (``proxy.exchange``) and runs the handler for it. State is grouped per server
(``ServerContext``), per connection (``HttpServerProtocol``: its lifecycle is one
``ConnState`` of ``proxy.states``, changed only by ``_to``; reading pauses are flow control
beside it) and per request (``Exchange``). The checks llhttp leaves to us are pure functions
in ``proxy.headrules``.

* Pipelining: requests are answered strictly in order. While one exchange runs, later complete
  requests wait in ``_pipeline``; reading pauses once one is waiting, which bounds the buffer.
* Request bodies stream: parsed chunks are queued on the exchange and reading pauses above a
  high-water mark; ``Exchange.read_body`` resumes it. ``100 Continue`` is written only when a
  handler actually asks for the body.
* Any framing or validation error answers with one status from ``proxy.errors`` and closes the
  connection, after earlier pipelined responses have gone out. Nothing after it is parsed.
* A client that goes away cancels the exchange's owner, whether it resets (RST) or closes
  (FIN), queued or in flight, as Go's server does: a queued request frees its place at once
  and an upstream request is cut. So reading goes on after a connection's last request
  (``Connection: close``, HTTP/1.0), discarding up to ``body_high_water`` bytes, or the FIN
  of a client that sends nothing more would never be seen.
* Timeouts (head read, keep-alive idle, write idle) are checked by the server's one-second
  sweeper from timestamps (no timer per request); the body-idle one only while a handler
  waits. Write idle: bytes unmoved in the write buffer for ``write_idle_timeout`` mean a
  client that stopped reading; the connection is cut (a closing one too: drains end).
* Exchanges reach the handler through ``proxy.context.serve``, as HTTP/2 streams do: its
  task-free ``fast(ex)`` first (``FastPath``, called inside llhttp's callbacks), else a
  task. Both end in ``Exchange.ensure_answered`` and ``exchange_over``.
* HTTP/2: a fresh connection opening with the h2 preface, or a bodiless ``Upgrade: h2c``
  request answered 101, is handed to ``proxy.http2`` (imported only then).
* The hot-path rules (``docs/design.md``, "Hot-path rules") hold for this module; the tests
  and ``python -m bench.instructions --check`` check the ones a machine can.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from proxy.context import FastPath, FlowListener, Handler, ServerContext, serve
from proxy.errors import (
    BadRequest,
    HeadersTooLarge,
    MethodNotAllowed,
    NotImplementedCoding,
    PayloadTooLarge,
    ProxyError,
    UriTooLong,
)
from proxy.exchange import ClientDisconnected, Exchange, status_line
from proxy.h1upgrade import Upgrades
from proxy.headers import UNDERSCORE, cached_lower, lower_name
from proxy.headrules import (
    PLAIN,
    check_head,
    check_header_sizes,
    coding_refusal,
    parser_is_compiled,
    split_absolute,
)
from proxy.states import TRANSITIONS, ConnState

__all__ = [
    "ClientDisconnected",
    "ConnState",
    "Exchange",
    "FastPath",
    "Handler",
    "HttpServerProtocol",
    "ServerContext",
    "parser_is_compiled",
    "status_line",
]

log = logging.getLogger("sluice.http")

# Module names for the members: a global load per use instead of an attribute lookup.
_IDLE, _HEAD, _BUSY, _LAST, _TUNNEL, _CLOSED = ConnState

#: Whether ``_to`` refuses a transition ``TRANSITIONS`` does not allow. Off in service,
#: where it would cost every request three more table lookups; the tests turn it on
#: (``tests/conftest.py``), so every test exercises the table.
CHECK_TRANSITIONS = False
#: ``TRANSITIONS`` as a table indexed by state, then by next state: what ``_to`` checks.
_ALLOWED = tuple(tuple(nxt in TRANSITIONS[state] for nxt in ConnState) for state in ConnState)


class _Spent:
    """The callbacks of a closed connection's parser: none."""


#: What a closed connection's parser becomes (``connection_lost``): it holds no protocol.
_SPENT_PARSER = httptools.HttpRequestParser(_Spent())


class HttpServerProtocol(Upgrades):
    """One client connection. See the module docstring for the rules it keeps."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_port = 0
        self._parser = httptools.HttpRequestParser(self)
        self._current: Exchange | None = None
        self._parsing: Exchange | None = None
        self._pipeline: deque[Exchange] = deque()
        self._url = b""
        self._head_bytes = 0
        #: Bytes ever fed to the parser, that count before the chunk being fed, and before
        #: the chunk the current request began in: ``_fed - _head_base`` bounds its head.
        self._fed = 0
        self._chunk_base = 0
        self._head_base = 0
        limits = ctx.limits
        #: Bytes a read may hold without progress (see ``data_received``).
        self._cap = limits.max_request_line + limits.max_total_header_bytes + 4
        self._max_field = limits.max_header_bytes
        self._max_total = limits.max_total_header_bytes
        #: A head no larger than this cannot break either header size limit.
        self._small_head = min(self._max_field, self._max_total)
        #: The connection's lifecycle (see the module docstring); changed only by ``_to``.
        self.state = _IDLE
        self.state_since = ctx.loop.time()
        # Flow control, not lifecycle: whether reading is paused, and whether for the body.
        self._reading_paused = False
        self._body_paused = False
        self.write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._tunnel_data: Callable[[bytes], None] | None = None
        self._tunnel_close: Callable[[], None] | None = None
        self._tunnel_eof: Callable[[], None] | None = None
        self._upgrade_buffer: bytearray | None = None
        # No more attributes without measuring (``python -m bench.instructions``): two more
        # cost every proxied request about 3k instructions (CPython 3.11's instance dicts,
        # whose shared keys stop being shared past a size), so state that is rarely needed
        # lives elsewhere: ``_UNSENT``, and ``_tunnel_data`` for ``_raw_body``.
        #: Told when writes to the client pause and resume (``flow(paused)``): the upstream
        #: side of the exchange being served, so that it stops reading meanwhile.
        self.flow_listener: FlowListener | None = None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else ""
        self.peer_port = peer[1] if isinstance(peer, tuple) and len(peer) > 1 else 0
        ctx = self.ctx
        if len(ctx.connections) >= ctx.limits.max_connections or ctx.closing:
            body = b"too many connections\n" if not ctx.closing else b"shutting down\n"
            self.transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()
            self.state = _CLOSED
            return
        ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self.ctx.connections.discard(self)
        # A connection is a cycle (the parser holds this protocol's callbacks; the transport
        # and this protocol hold each other): broken here, so that a closed connection is
        # freed at once by reference counting. Left to the cyclic collector, whose gen-2
        # passes are rare (``proxy.runner.settle_gc``), abandoned connections piled up: RSS
        # grew without a plateau under a storm of clients giving up (issue 15).
        self._parser = _SPENT_PARSER
        self.transport = None
        self._tunnel_data = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ClientDisconnected("client connection lost"))
        if self._tunnel_close is not None:
            close, self._tunnel_close = self._tunnel_close, None
            close()
        for ex in (self._current, self._parsing, *self._pipeline):
            if ex is None:
                continue
            ex.body_failed(ClientDisconnected("client connection lost"))
            ex.cancel()
        self._pipeline.clear()

    def eof_received(self) -> bool:
        if self._tunnel_close is not None:
            # Pass the half-close on; the tunnel ends when the other side closes too.
            if self._tunnel_eof is not None:
                self._tunnel_eof()
            return True
        ex = self._current
        if ex is None:
            return False
        if not ex.body_complete:
            ex.body_failed(ClientDisconnected("client closed before sending the whole body"))
        if ex.response_done:
            # Answered; its owner is finishing: the connection closes after it.
            self._to(_LAST)
            return True
        # The client left (or half-closed, which looks the same): cut the connection first,
        # so the owner stopped below finds the exchange over instead of answering it.
        ex.abort()
        ex.cancel()
        return False

    def data_received(self, data: bytes) -> None:
        if self._tunnel_data is not None:
            self._tunnel_data(data)
            return
        if self._upgrade_buffer is not None:
            self._upgrade_buffer += data
            if len(self._upgrade_buffer) > self.ctx.limits.body_high_water:
                self.pause_reading()
            return
        state = self.state
        if state is _LAST or state is _CLOSED:
            # After the last request: dropped, but read on (up to a bound) so that the
            # client's FIN or RST is seen while its request waits or runs. (No head is read
            # any more: ``_head_bytes`` counts the bytes dropped.)
            self._head_bytes += len(data)
            if self._head_bytes > self.ctx.limits.body_high_water:
                self.pause_reading()
            return
        if state is _IDLE:
            if not self._fed and data[:3] == b"PRI" and self.ctx.limits.h2c:
                self._switch_to_h2(data)  # HTTP/2 with prior knowledge
                return
            self._to(_HEAD)
        self._head_bytes += len(data)
        self._chunk_base = fed = self._fed
        self._fed = fed + len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self._switched_to_h2(data[offset:]):
                return
            # The parser is past the upgrade point: no request can follow this one.
            self._to(_LAST)
            if self._tunnel_data is not None:  # an upgrade declined: ``_raw_body``
                self._tunnel_data(data[offset:])
            else:
                self._upgrade_buffer = bytearray(data[offset:])
        except ProxyError as exc:
            self._reject(exc)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._reject(cause if isinstance(cause, ProxyError) else BadRequest(str(exc)))
        except httptools.HttpParserError as exc:
            if self.state is _LAST and self._parsing is None:
                # Bytes after a ``Connection: close`` request, which llhttp refuses to
                # parse: dropped, as in the branch above.
                self._head_bytes = len(data)
                return
            text = str(exc).strip() or type(exc).__name__
            self._reject(self._coding_error(text) or BadRequest(f"malformed request: {text}"))
        else:
            if self._head_bytes > self._cap:
                # Bytes that never make progress: a head that never ends, or (once the head
                # is in, where ``on_body`` resets the count) an endless chunk line or trailer
                # section. llhttp would buffer either without bound.
                parsing = self._parsing
                if parsing is not None and parsing.started_at != 0:
                    self._reject(BadRequest("chunk framing or trailer section too long"))
                elif len(self._url) > self.ctx.limits.max_request_line:
                    self._reject(UriTooLong("request line too long"))
                else:
                    self._reject(HeadersTooLarge("request header fields too large"))

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._parsing = Exchange(self)
        self._url = b""
        self._head_base = self._chunk_base
        self._head_bytes = 0
        if self.state is _IDLE:
            self._to(_HEAD)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.ctx.limits.max_request_line:
            raise UriTooLong("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sizes and the field count are checked once the head is complete (a head in one
        # small read cannot break them); meanwhile the cap in ``data_received`` bounds
        # what an endless head can hold. llhttp reports a message's start before any of
        # its fields, so ``_parsing`` is set (no assert: this runs once per field).
        ex: Exchange = self._parsing  # type: ignore[assignment]
        if ex.started_at:
            # A trailer field (llhttp reports them like headers): dropped, never merged
            # into the head (catalogue A8); the same cap bounds the trailer section.
            return
        low = cached_lower(name)
        if low is None:
            # Names with an underscore are refused, so they never enter the table.
            if UNDERSCORE in name:
                raise BadRequest("header names with underscores are refused")
            low = lower_name(name)
        ex.headers.append((name, value))
        ex.names.append(low)

    def on_headers_complete(self) -> None:
        ex = self._parsing
        assert ex is not None
        parser = self._parser
        ex.method = parser.get_method()
        ex.target = self._url
        keep_alive = parser.should_keep_alive()
        names = ex.names
        if keep_alive and b"connection" not in names and b"proxy-connection" not in names:
            # llhttp keeps only HTTP/1.1 alive without one of these headers, and
            # get_http_version() formats a new string (~2,000 instructions) per call.
            ex.version = "1.1"
        else:
            ex.version = parser.get_http_version()
        ex.keep_alive = keep_alive
        ex.upgrade = upgrade = parser.should_upgrade()
        if upgrade and ex.method == b"CONNECT":  # llhttp marks every CONNECT an upgrade
            raise MethodNotAllowed("CONNECT is not supported")
        ex.started_at = self.ctx.loop.time()
        if self._fed - self._head_base > self._small_head:
            check_header_sizes(ex.headers, self._max_field, self._max_total)
        framing = check_head(ex.headers, names, ex.version, self.ctx.limits)
        if self._url[0] != 47:  # not "/": llhttp allows no empty target
            self._absolute_form(ex)
        self._head_bytes = 0
        if framing is PLAIN:
            ex.body_complete = True
        else:
            ex.content_length = framing.content_length
            ex.chunked = framing.chunked
            ex.expect_continue = framing.expect_continue
            if not (ex.chunked or ex.content_length):
                ex.body_complete = True
        if ex.upgrade:
            if not ex.body_complete:
                self._upgrade_with_body(ex)  # h2c's too: served on HTTP/1.1, RFC 7540 3.2
            elif self._h2c_upgrade(ex):
                return
        if self._current is None:
            self._start(ex)
        else:
            self._pipeline.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        assert ex is not None
        limit = self.ctx.limits.max_body_bytes
        if limit is not None and ex.body_received + len(body) > limit:
            error = PayloadTooLarge("request body too large")
            ex.body_failed(error)
            raise error
        self._head_bytes = 0  # progress: see the cap in ``data_received``
        ex.push_body(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        assert ex is not None
        if self._tunnel_data is not None:
            return  # an upgrade declined: llhttp took no body, ``_raw_body`` completes it
        ex.body_complete = True
        if ex.body_waiter is not None:
            ex.wake_body()
        self._parsing = None
        self._head_bytes = 0
        if ex is not self._current:
            # A pipelined request is waiting: stop reading until the current one is done.
            self.pause_reading()
        if not ex.keep_alive:
            # The connection ends with this request; reading goes on, discarding, to see the
            # client leave (``data_received``).
            self._to(_LAST)

    def _coding_error(self, text: str) -> ProxyError | None:
        """llhttp refuses some Transfer-Encoding values before ``check_head`` sees them; Go
        answers those 501 (an unknown coding), not 400: the same answer here."""
        ex = self._parsing
        if ex is None or "Transfer-Encoding" not in text:
            return None
        if "Content-Length" not in text:
            # A Transfer-Encoding value llhttp refused as it read it (not yet in ``ex``).
            return NotImplementedCoding("unsupported Transfer-Encoding")
        # Both framing headers: 501 if the coding is unknown, else the conflict's 400.
        headers = ex.headers
        te = [headers[i][1] for i, low in enumerate(ex.names) if low == b"transfer-encoding"]
        return coding_refusal(te) if te else None

    def _absolute_form(self, ex: Exchange) -> None:
        """One authority for routing and forwarding: an absolute-form target becomes origin
        form and its authority the Host (RFC 9112 section 3.2.2, as Go's server reads it)."""
        split = split_absolute(ex.target)
        if split is None:
            return  # ``*`` or an unknown form: the handler's business
        ex.target, authority = split
        names = ex.names
        if b"host" in names:
            i = names.index(b"host")
            ex.headers[i] = (ex.headers[i][0], authority)
        else:
            ex.headers.append((b"Host", authority))
            names.append(b"host")

    # ----------------------------------------------------------------- exchanges

    def _start(self, ex: Exchange) -> None:
        self._current = ex
        if self.state is not _LAST:
            self._to(_BUSY)
        serve(self.ctx, ex)

    def exchange_over(self, ex: Exchange) -> None:
        """``ex`` is answered and its owner done: serve the next request, wait for one, or
        close, as the exchange and the connection's state allow."""
        if self._current is ex:
            self._current = None
        state = self.state
        if state is _CLOSED:
            return
        if ex.close_after or not ex.keep_alive or not ex.body_complete or self.ctx.closing:
            self.close()
            return
        if self._pipeline:
            self._start(self._pipeline.popleft())
            if not self._pipeline and self._parsing is None and not self._body_paused:
                # Read on while it runs: the next request, or the client's leaving.
                self.resume_reading()
            return
        if state is _LAST:
            self.close()
            return
        self._to(_IDLE if self._parsing is None else _HEAD)
        if self._reading_paused and not self._body_paused:
            self.resume_reading()

    def _to(self, state: ConnState) -> None:
        """The one place the connection's state changes; ``TRANSITIONS`` says what may
        (checked when ``CHECK_TRANSITIONS`` is set, as the tests do). CLOSED is final."""
        current = self.state
        if current is _CLOSED:
            return  # late events of a closed connection change nothing
        if CHECK_TRANSITIONS and not _ALLOWED[current][state]:
            raise RuntimeError(f"connection state {current.name} cannot become {state.name}")
        self.state = state
        if state <= _HEAD:  # the sweeper times an idle connection and a head from here
            self.state_since = self.ctx.loop.time()

    def _reject(self, error: ProxyError) -> None:
        """Answer a parse or validation error after earlier responses, then close."""
        self._to(_LAST)
        self.pause_reading()
        ex = self._parsing
        self._parsing = None
        if ex is not None and ex.task is not None:
            # The request was already dispatched (its body broke): fail it in place.
            ex.body_failed(error)
            return
        if ex is None:
            ex = Exchange(self)
        ex.preset_error = error
        ex.keep_alive = False
        ex.body_complete = True
        if self._current is None:
            self._start(ex)
        else:
            self._pipeline.append(ex)
