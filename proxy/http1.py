"""The HTTP/1.1 server side of the engine: one ``asyncio.Protocol`` per client connection.

Theory of operation
-------------------
llhttp (through httptools) parses the byte stream; the protocol turns each parsed request into
an ``Exchange`` (the request's data plus the means to answer it) and runs the handler for it in
its own task. State is grouped as: per server (``ServerContext``), per connection
(``HttpServerProtocol``) and per request (``Exchange``).

* Pipelining: requests are answered strictly in order. While one exchange runs, later complete
  requests wait in ``_pipeline``; reading pauses once one is waiting, which bounds the buffer.
* Request bodies stream: parsed chunks are queued on the exchange and reading pauses above a
  high-water mark; ``Exchange.read_body`` resumes it. ``100 Continue`` is written only when a
  handler actually asks for the body.
* Sluice frames every response itself (Content-Length, chunked, or close-delimited for
  HTTP/1.0), never both. A response that cannot be completed as announced is cut by closing
  the connection, never padded or terminated as if whole.
* Any framing or validation error answers with one status from ``proxy.errors`` and closes the
  connection, after earlier pipelined responses have gone out. Nothing after it is parsed.
* A client that goes away cancels the handler task. A client that half-closes (FIN) cancels it
  only while the request has not been dispatched upstream (HAProxy's ``abortonclose``), so a
  request waiting in a queue frees its place at once while a half-closed client that is
  already being served still gets its response.
* Timeouts (head read, keep-alive idle) are checked by the server's one-second sweeper from
  timestamps, so a request costs no timer operations; the body-idle timeout is applied only
  while a handler waits for body bytes.
* The fast path: a handler may also offer ``fast(ex) -> bool``. It is called first, inside
  llhttp's callbacks; returning True means it took the exchange and will finish it from
  later callbacks with ``Exchange.complete()`` (``Exchange.canceller`` stops it), so the
  request runs with no task and no future at all. It must not finish the exchange before
  returning; an error it raises is answered from a task. Anything it declines (bodies,
  upgrades, probes, a full queue, no idle upstream connection) takes the task path. Measured
  with callgrind: about 10 % fewer instructions per proxied request for the bare engine and
  15 % for the queue-proxy, because an asyncio Task plus a future round trip is the largest
  fixed cost left once the parsing and the writes are done.
* Hot-path rules, each found with callgrind on CPython 3.11 (``docs/benchmarks.md``): no
  ``asyncio.get_running_loop()`` per request (it makes a getpid() syscall); no ``b"x" in
  data`` for a single byte (bytes tries the operand as an integer first, raising and clearing
  a TypeError); no regex per request (verdicts are memoised); no ``zip(strict=True)`` over the
  headers; header names are compared through ``Exchange.names``, never lower-cased again; no
  method call on a name brought in by ``from ... import`` (CPython 3.11 compiles it to
  LOAD_ATTR and makes a bound method per call; ``tests/unit/test_hot_path_rules.py`` checks
  the request path's modules); and a finished request must leave no reference cycle, or
  every request waits for the cyclic collector instead of being freed at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import httptools

from proxy.errors import (
    BadRequest,
    ExpectationFailed,
    HeadersTooLarge,
    NotImplementedCoding,
    PayloadTooLarge,
    ProxyError,
    ServiceUnavailable,
    UriTooLong,
    reason_phrase,
)
from proxy.headers import (
    UNDERSCORE,
    HeaderList,
    cached_lower,
    lower_name,
)
from proxy.limits import ServerLimits

log = logging.getLogger("sluice.http")

Handler = Callable[["Exchange"], Awaitable[None]]

# Connection states, for the sweeper.
_IDLE, _HEAD, _BUSY = 0, 1, 2
# Response framing modes.
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2, 3

_STATUS_LINES: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TEXT_PLAIN = b"text/plain; charset=utf-8"


def parser_is_compiled() -> bool:
    """True when httptools' parser is the compiled llhttp extension (it has no other kind)."""
    module = type(httptools.HttpRequestParser(object())).__module__
    origin = getattr(__import__(module, fromlist=["_"]), "__file__", "") or ""
    return origin.endswith((".so", ".pyd"))


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
        _STATUS_LINES[status] = line
    return line


class FlowListener(Protocol):
    """Who is told when writes to the client pause (``flow(True)``) and resume."""

    def flow(self, paused: bool) -> None: ...


class ClientDisconnected(Exception):
    """The client went away while the handler was still reading or writing."""


class ServerContext:
    """What all connections of one listening server share."""

    __slots__ = ("closing", "connections", "fast", "handler", "limits", "loop")

    def __init__(
        self, handler: Handler, limits: ServerLimits, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.handler = handler
        #: Optional synchronous entry: ``fast(ex)`` returns True when it took the exchange
        #: and will finish it from callbacks (``Exchange.complete``), with no task at all.
        self.fast: Callable[[Exchange], bool] | None = getattr(handler, "fast", None)
        self.limits = limits
        self.loop = loop
        self.connections: set[HttpServerProtocol] = set()
        self.closing = False


class Exchange:
    """One request and its response. Handlers read the body and write the answer through it.

    Request attributes are plain data: ``method``, ``target`` (raw request-target), ``version``
    (``"1.1"``/``"1.0"``), ``headers`` (as received), ``peer`` (client IP), ``content_length``,
    ``chunked``. The response side enforces: one status line, framing chosen by the engine,
    nothing written after ``end``/``abort``/``fail``.
    """

    __slots__ = (
        "_body_error",
        "_body_waiter",
        "_buffered",
        "_chunks",
        "_continue_sent",
        "_mode",
        "_pending",
        "_proto",
        "_remaining",
        "body_complete",
        "body_received",
        "bytes_out",
        "canceller",
        "chunked",
        "close_after",
        "content_length",
        "dispatched",
        "expect_continue",
        "headers",
        "keep_alive",
        "last_write",
        "method",
        "names",
        "peer",
        "preset_error",
        "response_done",
        "response_started",
        "started_at",
        "status",
        "target",
        "task",
        "upgrade",
        "user",
        "version",
    )

    def __init__(self, proto: HttpServerProtocol) -> None:
        self._proto = proto
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: HeaderList = []
        #: The lower-case name of each header in ``headers``, in the same order, filled as
        #: the head is parsed from a table of names seen before: every component's pass
        #: over the headers compares shared objects (hashes computed once) instead of
        #: lower-casing each name again. Replace headers with ``set_headers`` only.
        self.names: list[bytes] = []
        self.peer = proto.peer
        self.keep_alive = True
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade = False
        self.preset_error: ProxyError | None = None
        self.task: asyncio.Task[None] | None = None
        #: Set by a fast-path owner: stops its work, as cancelling the task does otherwise.
        self.canceller: Callable[[], None] | None = None
        self.dispatched = False
        self.started_at = 0.0
        #: Free slot for the component handling the request (per-request state).
        self.user: Any = None
        # body
        self._chunks: deque[bytes] | None = None  # made by the first body bytes
        self._buffered = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self._body_error: BaseException | None = None
        self._continue_sent = False
        self.body_complete = False
        self.body_received = 0
        # response
        self.response_started = False
        self.response_done = False
        self.close_after = False
        self.status = 0
        self.bytes_out = 0
        self.last_write = 0.0
        self._mode = _NO_BODY
        self._remaining = 0
        self._pending: bytes | None = None

    # ----------------------------------------------------------------- request side

    @property
    def remote_addr(self) -> str:
        """The client's ``ip:port`` (``[ip]:port`` for IPv6), as Go's ``RemoteAddr``."""
        host = self.peer
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self._proto.peer_port}"

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def set_headers(self, headers: HeaderList) -> None:
        """Replace ``headers`` (and ``names`` with them)."""
        self.headers = headers
        self.names = [lower_name(name) for name, _ in headers]

    def header(self, name: bytes) -> bytes | None:
        """First value of the lower-case header ``name``."""
        names = self.names
        if name in names:
            return self.headers[names.index(name)][1]
        return None

    async def read_body(self) -> bytes:
        """The next chunk of the request body, ``b""`` once it is complete.

        Raises ``ClientDisconnected`` if the client left, a ``ProxyError`` if the body broke
        a limit or its framing, and ``BadRequest`` when no byte arrived for the body-idle
        timeout (the connection is then closed).
        """
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < self._proto.ctx.limits.body_high_water:
                    self._proto.resume_body()
                return chunk
            if self._body_error is not None:
                raise self._body_error
            if self.body_complete:
                return b""
            if self.expect_continue and not self._continue_sent and not self.response_started:
                self._continue_sent = True
                self._proto.write_raw(_CONTINUE)
            self._proto.resume_body()
            waiter = self._proto.ctx.loop.create_future()
            self._body_waiter = waiter
            try:
                await asyncio.wait_for(waiter, self._proto.ctx.limits.body_idle_timeout)
            except TimeoutError:
                self.close_after = True
                raise BadRequest("request body idle timeout") from None
            finally:
                self._body_waiter = None

    def _push_body(self, data: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = deque()
        chunks.append(data)
        self._buffered += len(data)
        self.body_received += len(data)
        if self._buffered >= self._proto.ctx.limits.body_high_water:
            self._proto.pause_body()
        self._wake_body()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _body_failed(self, exc: BaseException) -> None:
        if self._body_error is None:
            self._body_error = exc
        self._wake_body()

    # ---------------------------------------------------------------- response side

    @property
    def write_paused(self) -> bool:
        return self._proto.write_paused

    def start_response(
        self,
        status: int,
        headers: HeaderList,
        content_length: int | None = None,
    ) -> None:
        """Write the status line and ``headers``, which must hold no framing or hop-by-hop
        headers (an upstream's come so from ``proxy.client``).

        The engine adds Content-Length or Transfer-Encoding and Connection itself.
        """
        if self.response_started:
            raise RuntimeError("response already started")
        self.response_started = True
        self.status = status
        parts = [status_line(status)]
        for key, value in headers:
            parts += (key, b": ", value, b"\r\n")
        if self.method == b"HEAD" or status in (204, 304) or status < 200:
            self._mode = _NO_BODY
            if content_length is not None and status != 204 and status >= 200:
                parts.append(b"Content-Length: %d\r\n" % content_length)
        elif content_length is not None:
            self._mode = _LENGTH
            self._remaining = content_length
            parts.append(b"Content-Length: %d\r\n" % content_length)
        elif self.version == "1.1":
            self._mode = _CHUNKED
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            self._mode = _UNTIL_CLOSE
            self.keep_alive = False
        if not self.body_complete and not self.upgrade:
            # The rest of the body will not be read: the connection cannot carry another
            # request after this one.
            self.close_after = True
        if self.close_after or not self.keep_alive or self._proto.ctx.closing:
            self.keep_alive = False
            parts.append(b"Connection: close\r\n")
        elif self.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        # Held back until the first body bytes or ``flush``: one write instead of two.
        self._pending = b"".join(parts)

    def flush(self) -> None:
        """Send a response head that is still held back."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._proto.write_raw(pending)

    def informational(self, status: int, headers: HeaderList) -> None:
        """Forward a 1xx interim response (103 Early Hints...) before the final one."""
        if self.response_started or self.version != "1.1" or status == 101:
            return
        if status == 100:
            if self._continue_sent:
                return
            self._continue_sent = True
        parts = [status_line(status)]
        for key, value in headers:
            parts += (key, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self._proto.write_raw(b"".join(parts))

    def write(self, data: bytes) -> None:
        """Write body bytes with the framing chosen in ``start_response``."""
        if self.response_done or not data:
            return
        mode = self._mode
        head = self._pending
        if head is not None:
            self._pending = None
        else:
            head = b""
        if mode == _LENGTH:
            if len(data) > self._remaining:
                data = data[: self._remaining]
            self._remaining -= len(data)
            self._proto.write_raw(head + data)
        elif mode == _CHUNKED:
            self._proto.write_lines((head, b"%x\r\n" % len(data), data, b"\r\n"))
        elif mode == _UNTIL_CLOSE:
            self._proto.write_raw(head + data)
        else:
            if head:
                self._proto.write_raw(head)
            return
        self.bytes_out += len(data)
        self.last_write = self._proto.ctx.loop.time()

    async def drain(self) -> None:
        """Wait until the client's socket buffer falls below its low-water mark."""
        self.flush()
        await self._proto.wait_writable()

    def end(self) -> None:
        """Finish the response. A Content-Length response that is short is cut instead."""
        if self.response_done:
            return
        head = self._pending
        if head is not None:
            self._pending = None
            self._proto.write_raw(head + b"0\r\n\r\n" if self._mode == _CHUNKED else head)
        elif self._mode == _CHUNKED:
            self._proto.write_raw(b"0\r\n\r\n")
        if self._mode == _LENGTH and self._remaining > 0:
            self.abort()
            return
        elif self._mode == _UNTIL_CLOSE:
            self.close_after = True
        self.response_done = True

    def abort(self) -> None:
        """Stop the response where it is: flush what was written, then close the connection.

        The client sees a short Content-Length body or a chunked body with no last chunk,
        which every HTTP client reports as truncated.
        """
        self.response_done = True
        self.close_after = True
        self.keep_alive = False
        self.flush()
        self._proto.close()

    def cancel(self) -> None:
        """Stop whoever serves this exchange (its handler task), e.g. when a timeout fired."""
        task = self.task
        if task is not None:
            if not task.done():
                task.cancel()
            return
        canceller = self.canceller
        if canceller is not None:
            self.canceller = None
            canceller()

    def complete(self) -> None:
        """A fast-path owner is done: make sure an answer went out, then free the connection."""
        if not self.response_done:
            if self.response_started:
                self.abort()
            else:
                self.fail(ProxyError("handler returned no response"))
        self._proto._finished(self)

    def fail(self, error: ProxyError) -> None:
        """Answer with ``error``'s status and body, or abort if the response already started."""
        if self.response_done:
            return
        if self.response_started:
            self.abort()
            return
        if error.close:
            self.close_after = True
        self.send(error.status, error.body())

    def send(
        self,
        status: int,
        body: bytes = b"",
        headers: HeaderList | None = None,
        content_type: bytes | None = _TEXT_PLAIN,
    ) -> None:
        """A complete small response in one write. ``http.Error``-style by default."""
        hdrs: HeaderList = list(headers) if headers else []
        if content_type is not None and body:
            hdrs.append((b"Content-Type", content_type))
            if content_type is _TEXT_PLAIN:
                hdrs.append((b"X-Content-Type-Options", b"nosniff"))
        self.start_response(status, hdrs, len(body))
        if body:
            self.write(body)
        self.end()

    # ------------------------------------------------------------------- upgrades

    def start_tunnel(
        self,
        headers: HeaderList,
        on_data: Callable[[bytes], None],
        on_close: Callable[[], None],
        on_eof: Callable[[], None] | None = None,
    ) -> Callable[[bytes], None]:
        """Answer ``101`` with ``headers`` and splice the connection to ``on_data``.

        Bytes the client already sent after its upgrade request are delivered first. Returns
        the function that writes upstream bytes to the client. ``on_close`` runs when the
        client connection is gone, ``on_eof`` when the client half-closed it.
        """
        self.response_started = True
        self.status = 101
        parts = [status_line(101)]
        for key, value in headers:
            parts += (key, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self._proto.write_raw(b"".join(parts))
        self._proto.enter_tunnel(on_data, on_close, on_eof)
        return self._proto.write_raw


class HttpServerProtocol(asyncio.Protocol):
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
        self.state = _IDLE
        self.state_since = ctx.loop.time()
        self._reading_paused = False
        self._body_paused = False
        self._stopped_parsing = False
        self.write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._tunnel_data: Callable[[bytes], None] | None = None
        self._tunnel_close: Callable[[], None] | None = None
        self._tunnel_eof: Callable[[], None] | None = None
        self._upgrade_buffer: bytearray | None = None
        self._closed = False
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
            self._closed = True
            return
        ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ClientDisconnected("client connection lost"))
        if self._tunnel_close is not None:
            close, self._tunnel_close = self._tunnel_close, None
            close()
        for ex in (self._current, self._parsing, *self._pipeline):
            if ex is None:
                continue
            ex._body_failed(ClientDisconnected("client connection lost"))
            ex.cancel()
        self._pipeline.clear()

    def eof_received(self) -> bool:
        if self._tunnel_close is not None:
            # Pass the half-close on; the tunnel ends when the other side closes too.
            if self._tunnel_eof is not None:
                self._tunnel_eof()
            return True
        ex = self._current
        if ex is not None and not ex.body_complete:
            ex._body_failed(ClientDisconnected("client closed before sending the whole body"))
        if ex is not None and not ex.dispatched:
            ex.cancel()
        if ex is None:
            return False
        # Keep the write side open: a half-closed client still gets its response.
        self._stopped_parsing = True
        return True

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
        if self._closed:
            raise ClientDisconnected("client connection lost")
        if not self.write_paused:
            return
        if self._writable is None or self._writable.done():
            self._writable = self.ctx.loop.create_future()
        await self._writable

    def data_received(self, data: bytes) -> None:
        if self._tunnel_data is not None:
            self._tunnel_data(data)
            return
        if self._upgrade_buffer is not None:
            self._upgrade_buffer += data
            if len(self._upgrade_buffer) > self.ctx.limits.body_high_water:
                self.pause_reading()
            return
        if self._stopped_parsing:
            return
        if self.state == _IDLE:
            self.state = _HEAD
            self.state_since = self.ctx.loop.time()
        self._head_bytes += len(data)
        self._chunk_base = fed = self._fed
        self._fed = fed + len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._upgrade_buffer = bytearray(data[offset:])
        except ProxyError as exc:
            self._protocol_error(exc)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._protocol_error(cause if isinstance(cause, ProxyError) else BadRequest(str(exc)))
        except httptools.HttpParserError as exc:
            self._protocol_error(BadRequest(_parser_message(exc)))
        else:
            if self._head_bytes > self._cap:
                # Bytes that never make progress: a head that never ends, or (once the head
                # is in, where ``on_body`` resets the count) an endless chunk line or trailer
                # section. llhttp would buffer either without bound.
                parsing = self._parsing
                if parsing is not None and parsing.started_at != 0:
                    self._protocol_error(BadRequest("chunk framing or trailer section too long"))
                elif len(self._url) > self.ctx.limits.max_request_line:
                    self._protocol_error(UriTooLong("request line too long"))
                else:
                    self._protocol_error(HeadersTooLarge("request header fields too large"))

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._parsing = Exchange(self)
        self._url = b""
        self._head_base = self._chunk_base
        self._head_bytes = 0
        if self.state == _IDLE:
            self.state = _HEAD
            self.state_since = self.ctx.loop.time()

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
        ex.upgrade = parser.should_upgrade()
        ex.started_at = self.ctx.loop.time()
        if self._fed - self._head_base > self._small_head:
            _check_header_sizes(ex.headers, self._max_field, self._max_total)
        _validate_head(ex, self.ctx.limits)
        self._head_bytes = 0
        if not (ex.chunked or ex.content_length):
            ex.body_complete = True
        if self._current is None:  # ``_dispatch``, inlined: once per request
            self._start(ex)
        else:
            self._pipeline.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        assert ex is not None
        limit = self.ctx.limits.max_body_bytes
        if limit is not None and ex.body_received + len(body) > limit:
            error = PayloadTooLarge("request body too large")
            ex._body_failed(error)
            raise error
        self._head_bytes = 0  # progress: see the cap in ``data_received``
        ex._push_body(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        assert ex is not None
        ex.body_complete = True
        if ex._body_waiter is not None:
            ex._wake_body()
        self._parsing = None
        self._head_bytes = 0
        if ex is not self._current or not ex.keep_alive:
            # A pipelined request is waiting, or this connection ends with this request:
            # stop reading until the current response is done.
            self.pause_reading()
            if not ex.keep_alive:
                self._stopped_parsing = True

    # ----------------------------------------------------------------- exchanges

    def _dispatch(self, ex: Exchange) -> None:
        if self._current is None:
            self._start(ex)
        else:
            self._pipeline.append(ex)

    def _start(self, ex: Exchange) -> None:
        self._current = ex
        self.state = _BUSY
        fast = self.ctx.fast
        if fast is not None and ex.preset_error is None:
            # Runs inside llhttp's callbacks: a fast owner must not finish the exchange
            # before returning; an error it raises is answered from a task instead.
            try:
                if fast(ex):
                    return
            except ProxyError as exc:
                ex.preset_error = exc
        ex.task = self.ctx.loop.create_task(self._run(ex))

    async def _run(self, ex: Exchange) -> None:
        try:
            if ex.preset_error is not None:
                ex.fail(ex.preset_error)
            else:
                await self.ctx.handler(ex)
        except ProxyError as exc:
            ex.fail(exc)
        except asyncio.CancelledError:
            if not ex.response_done:
                ex.abort()
        except ClientDisconnected:
            ex.abort()
        except Exception:
            log.exception("handler failed for %s %r", ex.method.decode(), ex.target)
            ex.fail(ProxyError("internal error"))
        finally:
            if not ex.response_done:
                if ex.response_started:
                    ex.abort()
                else:
                    ex.fail(ProxyError("handler returned no response"))
            self._finished(ex)

    def _finished(self, ex: Exchange) -> None:
        if self._current is ex:
            self._current = None
        if self._closed:
            return
        if ex.close_after or not ex.keep_alive or not ex.body_complete or self.ctx.closing:
            self.close()
            return
        if self._upgrade_buffer is not None:
            # An upgrade request that was answered without a tunnel: the parser is past the
            # upgrade point, so this connection cannot carry another request.
            self.close()
            return
        if self._pipeline:
            self._start(self._pipeline.popleft())
            return
        if self._stopped_parsing:
            self.close()
            return
        self.state = _IDLE if self._parsing is None else _HEAD
        self.state_since = self.ctx.loop.time()
        if self._reading_paused and not self._body_paused:
            self.resume_reading()

    def _protocol_error(self, error: ProxyError) -> None:
        """Answer a parse or validation error after earlier responses, then close."""
        self._stopped_parsing = True
        self.pause_reading()
        ex = self._parsing
        self._parsing = None
        if ex is not None and ex.task is not None:
            # The request was already dispatched (its body broke): fail it in place.
            ex._body_failed(error)
            return
        if ex is None:
            ex = Exchange(self)
        ex.preset_error = error
        ex.keep_alive = False
        ex.body_complete = True
        self._dispatch(ex)

    # --------------------------------------------------------------------- I/O

    def write_raw(self, data: bytes) -> None:
        if not self._closed and self.transport is not None:
            self.transport.write(data)

    def write_lines(self, parts: tuple[bytes, ...]) -> None:
        if not self._closed and self.transport is not None:
            self.transport.writelines(parts)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closed:
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
        if self.transport is not None and not self._closed:
            self._closed = True
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
        pending = self._upgrade_buffer
        self._upgrade_buffer = None
        if pending:
            on_data(bytes(pending))
        self.resume_reading()

    # ----------------------------------------------------------------- sweeper

    def check_timeouts(self, now: float) -> None:
        """Close the connection if it idled past keep-alive or dawdled over a request head."""
        limits = self.ctx.limits
        if self.state == _IDLE and self._tunnel_data is None:
            if now - self.state_since > limits.keepalive_timeout or self.ctx.closing:
                self.close()
        elif self.state == _HEAD and now - self.state_since > limits.head_timeout:
            self._protocol_error(_HeadTimeout("request head read timeout"))

    @property
    def idle(self) -> bool:
        return self.state == _IDLE and self._tunnel_data is None

    @property
    def tunnelled(self) -> bool:
        """Whether the connection was switched to a byte tunnel (websocket) by a 101."""
        return self._tunnel_data is not None


class _HeadTimeout(ProxyError):
    status = 408
    close = True


def _parser_message(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"malformed request: {text}"


# Characters nginx refuses in Host (http_host.t), control bytes, and "..".
_BAD_HOST = re.compile(rb"[/\\@\s\x00-\x1f\x7f]|\.\.")


# A regex search costs ~3,500 instructions per request and clients send the same few hosts:
# verdicts on the hosts seen lately are kept.
@functools.lru_cache(maxsize=1024)
def _host_ok(value: bytes) -> bool:
    return _BAD_HOST.search(value) is None


def _check_header_sizes(headers: HeaderList, max_field: int, max_total: int) -> None:
    """Each field (name, value and four bytes of framing) and their sum within bounds."""
    total = 0
    for name, value in headers:
        size = len(name) + len(value) + 4
        total += size
        if size > max_field or total > max_total:
            raise HeadersTooLarge("request header fields too large")


_CHECKED_NAMES = frozenset({b"host", b"expect", b"content-length", b"transfer-encoding"})
_HOST_ONLY = frozenset({b"host"})


def _validate_head(ex: Exchange, limits: ServerLimits) -> None:
    """Checks llhttp leaves to us: version, Host, framing headers, expectations, size."""
    if len(ex.headers) > limits.max_header_count:
        raise HeadersTooLarge("too many request header fields")
    if ex.version not in ("1.1", "1.0"):
        raise BadRequest(f"unsupported HTTP version {ex.version}")
    names = ex.names
    headers = ex.headers
    if _HOST_ONLY.issuperset(_CHECKED_NAMES.intersection(names)):
        # The common case, found in C: Host is the only field to check, if present.
        hosts = names.count(b"host")
        if hosts == 1:
            if not _host_ok(headers[names.index(b"host")][1]):
                raise BadRequest("invalid Host header")
            return
        if hosts > 1:
            raise BadRequest("more than one Host header")
        if ex.version == "1.1":
            raise BadRequest("missing Host header")
        return
    hosts = 0
    te_values: list[bytes] = []
    cl_values: list[bytes] = []
    for i, low in enumerate(names):
        if low not in _CHECKED_NAMES:
            continue
        value = headers[i][1]
        if low == b"host":
            hosts += 1
            if not _host_ok(value):
                raise BadRequest("invalid Host header")
        elif low == b"transfer-encoding":
            te_values.append(value)
        elif low == b"content-length":
            cl_values.append(value)
        elif low == b"expect":
            if value.strip().lower() == b"100-continue":
                ex.expect_continue = ex.version == "1.1"
            else:
                raise ExpectationFailed("unsupported expectation")
    if hosts > 1:
        raise BadRequest("more than one Host header")
    if hosts == 0 and ex.version == "1.1":
        raise BadRequest("missing Host header")
    if te_values:
        if ex.version == "1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if cl_values:
            raise BadRequest("both Transfer-Encoding and Content-Length")
        if len(te_values) > 1:
            raise BadRequest("more than one Transfer-Encoding header")
        codings = [c.strip().lower() for c in te_values[0].split(b",")]
        if codings != [b"chunked"]:
            if b"chunked" in codings:
                raise BadRequest("invalid Transfer-Encoding")
            raise NotImplementedCoding("unsupported Transfer-Encoding")
        ex.chunked = True
    elif cl_values:
        if len(cl_values) > 1:
            raise BadRequest("more than one Content-Length")
        raw = cl_values[0].strip()
        if not raw.isdigit() or len(raw) > 18:
            raise BadRequest("invalid Content-Length")
        ex.content_length = int(raw)
        if limits.max_body_bytes is not None and ex.content_length > limits.max_body_bytes:
            raise PayloadTooLarge("request body too large")


def overloaded(reason: str = "server overloaded") -> ServiceUnavailable:
    return ServiceUnavailable(reason)
