"""One request and its response: what a handler reads the request from and answers through.

An ``Exchange`` belongs to what carries it (``conn``, a ``proxy.context.Carrier``: an
HTTP/1.1 connection, or an HTTP/2 stream whose ``proxy.h2stream.H2Exchange`` writes frames
instead). Its HTTP/1.1 response side frames every response itself (Content-Length, chunked,
or close-delimited for HTTP/1.0), never both, and cuts a response that cannot be completed
as announced instead of padding it. Errors
become responses in one place, ``answer_error``; ``Exchange.ensure_answered`` is the one check
every way an exchange ends goes through (a task's end, a callback owner's ``complete``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.errors import BadRequest, ProxyError, reason_phrase
from proxy.headers import HeaderList, lower_name
from proxy.states import ResponseState

if TYPE_CHECKING:
    from proxy.context import Carrier

__all__ = ["ClientDisconnected", "Exchange", "answer_error", "status_line"]

log = logging.getLogger("sluice.http")


class BodyMode(enum.IntEnum):
    """How the response body is framed, chosen once by ``start_response``."""

    NONE = 0
    LENGTH = 1
    CHUNKED = 2
    UNTIL_CLOSE = 3


# Module names for the members: a global load per use instead of an attribute lookup.
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = BodyMode
_PENDING, _HEAD, _DONE = ResponseState

_STATUS_LINES: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TEXT_PLAIN = b"text/plain; charset=utf-8"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
        _STATUS_LINES[status] = line
    return line


class ClientDisconnected(Exception):
    """The client went away while the handler was still reading or writing."""


def answer_error(ex: Exchange, exc: BaseException) -> None:
    """What the client gets when ``exc`` ended the work on ``ex``: the one mapping.

    A ``ProxyError`` is its status (or a cut, once the response started); cancellation or a
    vanished client cuts whatever was not finished; anything else is a bug, logged, and 500.
    """
    if isinstance(exc, ProxyError):
        ex.fail(exc)
    elif isinstance(exc, asyncio.CancelledError | ClientDisconnected):
        if ex.response is not _DONE:
            ex.abort()
    else:
        log.error("handler failed for %s %r", ex.method.decode("latin-1"), ex.target, exc_info=exc)
        ex.fail(ProxyError("internal error"))


class Exchange:
    """One request and its response. Handlers read the body and write the answer through it.

    Request attributes are plain data: ``method``, ``target`` (raw request-target), ``version``
    (``"1.1"``/``"1.0"``), ``headers`` (as received), ``peer`` (client IP), ``content_length``,
    ``chunked``. The response side enforces: one status line, framing chosen by the engine,
    nothing written after ``end``/``abort``/``fail``.
    """

    __slots__ = (
        "_body_error",
        "_buffered",
        "_chunks",
        "_continue_sent",
        "_mode",
        "_pending",
        "_remaining",
        "body_complete",
        "body_received",
        "body_waiter",
        "bytes_out",
        "canceller",
        "chunked",
        "close_after",
        "conn",
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
        "response",
        "started_at",
        "status",
        "target",
        "task",
        "upgrade",
        "version",
    )

    def __init__(self, conn: Carrier) -> None:
        self.conn = conn
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: HeaderList = []
        #: The lower-case name of each header in ``headers``, in the same order, filled as
        #: the head is parsed from a table of names seen before: every component's pass
        #: over the headers compares shared objects (hashes computed once) instead of
        #: lower-casing each name again. Replace headers with ``set_headers`` only.
        self.names: list[bytes] = []
        self.peer = conn.peer
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
        # body
        self._chunks: deque[bytes] | None = None  # made by the first body bytes
        self._buffered = 0
        #: What a ``read_body`` waiting for bytes awaits (read-only outside this class).
        self.body_waiter: asyncio.Future[None] | None = None
        self._body_error: BaseException | None = None
        self._continue_sent = False
        self.body_complete = False
        self.body_received = 0
        # response
        #: The response side's lifecycle (``ResponseState``). Only ``start_response``,
        #: ``start_tunnel`` (PENDING to HEAD, refused otherwise), ``end`` and ``abort`` (to
        #: DONE) change it, each guarded as ``RESPONSE_TRANSITIONS`` says; assignments, not
        #: a method, because a call would cost every request two more frames.
        self.response = _PENDING
        self.close_after = False
        self.status = 0
        self.bytes_out = 0
        self.last_write = 0.0
        self._mode: BodyMode = _NO_BODY
        self._remaining = 0
        self._pending: bytes | None = None

    # ----------------------------------------------------------------- request side

    @property
    def remote_addr(self) -> str:
        """The client's ``ip:port`` (``[ip]:port`` for IPv6), as Go's ``RemoteAddr``."""
        host = self.peer
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.conn.peer_port}"

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
                if self._buffered < self.conn.ctx.limits.body_high_water:
                    self.conn.resume_body()
                return chunk
            if self._body_error is not None:
                raise self._body_error
            if self.body_complete:
                return b""
            if self.expect_continue and not self._continue_sent and self.response is _PENDING:
                self._continue_sent = True
                self.conn.write_raw(_CONTINUE)
            self.conn.resume_body()
            waiter = self.conn.ctx.loop.create_future()
            self.body_waiter = waiter
            try:
                await asyncio.wait_for(waiter, self.conn.ctx.limits.body_idle_timeout)
            except TimeoutError:
                self.close_after = True
                raise BadRequest("request body idle timeout") from None
            finally:
                self.body_waiter = None

    def push_body(self, data: bytes) -> None:
        """Queue parsed body bytes for ``read_body`` (the connection's parser calls it)."""
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = deque()
        chunks.append(data)
        self._buffered += len(data)
        self.body_received += len(data)
        if self._buffered >= self.conn.ctx.limits.body_high_water:
            self.conn.pause_body()
        self.wake_body()

    def wake_body(self) -> None:
        """Wake a ``read_body`` waiting in ``body_waiter`` (the connection calls it)."""
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def body_failed(self, exc: BaseException) -> None:
        """The body cannot complete: ``read_body`` raises ``exc`` from now on."""
        if self._body_error is None:
            self._body_error = exc
        self.wake_body()

    # ---------------------------------------------------------------- response side

    @property
    def write_paused(self) -> bool:
        return self.conn.write_paused

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
        if self.response is not _PENDING:
            raise RuntimeError("response already started")
        self.response = _HEAD
        self.status = status
        parts = [_STATUS_LINES.get(status) or status_line(status)]
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
        if self.close_after or not self.keep_alive or self.conn.ctx.closing:
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
            self.conn.write_raw(pending)

    def informational(self, status: int, headers: HeaderList) -> None:
        """Forward a 1xx interim response (103 Early Hints...) before the final one."""
        if self.response is not _PENDING or self.version != "1.1" or status == 101:
            return
        if status == 100:
            if self._continue_sent:
                return
            self._continue_sent = True
        parts = [status_line(status)]
        for key, value in headers:
            parts += (key, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self.conn.write_raw(b"".join(parts))

    def write(self, data: bytes) -> None:
        """Write body bytes with the framing chosen in ``start_response``."""
        if self.response is _DONE or not data:
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
            self.conn.write_raw(head + data)
        elif mode == _CHUNKED:
            self.conn.write_lines((head, b"%x\r\n" % len(data), data, b"\r\n"))
        elif mode == _UNTIL_CLOSE:
            self.conn.write_raw(head + data)
        else:
            if head:
                self.conn.write_raw(head)
            return
        self.bytes_out += len(data)
        self.last_write = self.conn.ctx.loop.time()

    async def drain(self) -> None:
        """Wait until the client's socket buffer falls below its low-water mark."""
        self.flush()
        await self.conn.wait_writable()

    def end(self) -> None:
        """Finish the response. A Content-Length response that is short is cut instead."""
        if self.response is _DONE:
            return
        head = self._pending
        if head is not None:
            self._pending = None
            self.conn.write_raw(head + b"0\r\n\r\n" if self._mode == _CHUNKED else head)
        elif self._mode == _CHUNKED:
            self.conn.write_raw(b"0\r\n\r\n")
        if self._mode == _LENGTH and self._remaining > 0:
            self.abort()
            return
        elif self._mode == _UNTIL_CLOSE:
            self.close_after = True
        self.response = _DONE

    def trailers(self, headers: HeaderList) -> None:
        """Trailer fields for the end of the response (gRPC's ``grpc-status``), sent by
        ``end``. HTTP/1.1 drops them, as it drops an upstream's chunked trailers: only
        HTTP/2 carries them (``proxy.http2``)."""

    def abort(self) -> None:
        """Stop the response where it is: flush what was written, then close the connection.

        The client sees a short Content-Length body or a chunked body with no last chunk,
        which every HTTP client reports as truncated.
        """
        self.response = _DONE
        self.close_after = True
        self.keep_alive = False
        self.flush()
        self.conn.close()

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
        if self.response is not _DONE:
            self.ensure_answered()
        self.conn.exchange_over(self)

    def ensure_answered(self) -> None:
        """The owner is done with the exchange: cut a response it left unfinished, or
        answer 500 when it wrote none. Every way an exchange ends goes through here."""
        if self.response is not _DONE:
            if self.response is _HEAD:
                self.abort()
            else:
                self.fail(ProxyError("handler returned no response"))

    def fail(self, error: ProxyError) -> None:
        """Answer with ``error``'s status and body, or abort if the response already started."""
        if self.response is _DONE:
            return
        if self.response is _HEAD:
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

    @property
    def response_started(self) -> bool:
        """Whether a status line went out (or is held back for the first body bytes)."""
        return self.response is not _PENDING

    @property
    def response_done(self) -> bool:
        """Whether the response ended, was cut or failed: nothing more is written."""
        return self.response is _DONE

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
        if self.response is not _PENDING:
            raise RuntimeError("response already started")
        self.response = _HEAD
        self.status = 101
        parts = [status_line(101)]
        for key, value in headers:
            parts += (key, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self.conn.write_raw(b"".join(parts))
        self.conn.enter_tunnel(on_data, on_close, on_eof)
        return self.conn.write_raw
