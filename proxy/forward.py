"""Reverse-proxying one exchange to one upstream: the part both components share.

``forward`` builds the upstream request head (hop-by-hop headers stripped, ``X-Forwarded-For``
appended, the component's header edits applied, framing chosen by us), streams the body with
back-pressure, and pipes the response into the client exchange as llhttp parses it. It never
retries a request that may have reached the upstream; the one exception is Go's: an
idempotent request with no body whose reused keep-alive connection turned out to be dead
before any response byte is sent once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.client import UpstreamConnection, UpstreamPool
from proxy.errors import BadGateway, ProxyError
from proxy.headers import HOP_BY_HOP, Header, HeaderList, connection_tokens
from proxy.http1 import ClientDisconnected, Exchange

# Headers the proxy writes itself on the upstream request.
_NONE: frozenset[bytes] = frozenset()
_REQUEST_OWN = frozenset({b"host", b"x-forwarded-for", b"content-length", b"expect"})


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A component's edits to the upstream request, beyond the engine's own.

    ``remove`` holds lower-case names dropped from the client's request; ``set`` headers are
    written after it (replacing any client value, as Knative's ingress overwrites). ``host``
    replaces the Host header when given.
    """

    remove: frozenset[bytes] = frozenset()
    set: tuple[Header, ...] = ()
    host: bytes | None = None
    #: Every lower-case name ``build_request_head`` skips, computed once per rewrite.
    skip: frozenset[bytes] = field(init=False, repr=False, compare=False)
    #: ``skip`` but Host: a request with none of these names is copied as it came.
    edits: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = frozenset(name.lower() for name, _ in self.set)
        skip, edits = _skip_sets(self.remove, names)
        object.__setattr__(self, "skip", skip)
        object.__setattr__(self, "edits", edits)


@functools.lru_cache(maxsize=256)
def _skip_sets(
    remove: frozenset[bytes], set_names: frozenset[bytes]
) -> tuple[frozenset[bytes], frozenset[bytes]]:
    # Components build a Rewrite per request when a header value varies (K-Original-Host);
    # the names to skip do not vary, so the union is made once per combination.
    skip = HOP_BY_HOP | remove | set_names | _REQUEST_OWN
    return skip, skip - {b"host"}


NO_REWRITE = Rewrite()


_ABSOLUTE = (b"http://", b"https:/")


def _origin_form(target: bytes) -> tuple[bytes, bytes]:
    """An absolute-form target as (origin-form target, authority), as Go's server reads it.

    RFC 9112 section 3.2.2: the target's authority replaces the Host header, and the app
    gets the origin form (``http://a.example/p?q`` becomes ``/p?q`` with Host ``a.example``).
    """
    rest = target.split(b"//", 1)[1]
    end = len(rest)
    for sep in (b"/", b"?"):
        at = rest.find(sep)
        if 0 <= at < end:
            end = at
    authority, path = rest[:end], rest[end:]
    return (path if path[:1] == b"/" else b"/" + path), authority


def build_request_head(ex: Exchange, rewrite: Rewrite, default_host: bytes) -> bytes:
    """The upstream request head for ``ex`` (HTTP/1.1)."""
    headers = ex.headers
    names = ex.names
    host = rewrite.host
    target = ex.target
    if target[:1] != b"/" and target[:7].lower() in _ABSOLUTE:
        target, authority = _origin_form(target)
        if host is None:
            host = authority
    xff: list[bytes] = []
    if host is None and rewrite.edits.isdisjoint(names) and b"host" in names:
        # Nothing to drop or replace (the common case): the client's fields go as they
        # came, Host in its place, joined in C rather than a Python loop per header.
        head = b"\r\n".join(map(b": ".join, headers))
        parts = [ex.method, b" ", target, b" HTTP/1.1\r\n", head, b"\r\n"]
    else:
        parts = [ex.method, b" ", target, b" HTTP/1.1\r\n"]
        skip = rewrite.skip
        # Fields the client names in Connection are gone before the proxy adds its own: a
        # named X-Forwarded-For must not survive as the prefix of the one appended below.
        named = connection_tokens(headers) if b"connection" in names else _NONE
        if named:
            skip = skip | named
        # Indexed, not zip(): zip(strict=True) costs ~50 ns per header here.
        for i, low in enumerate(names):
            name, value = headers[i]
            if low in skip:
                if low == b"host":
                    if host is None:
                        host = value
                elif low == b"x-forwarded-for" and low not in named:
                    xff.append(value)
                continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"Host: ", host if host is not None else default_host, b"\r\n")
    for name, value in rewrite.set:
        parts += (name, b": ", value, b"\r\n")
    if ex.peer:
        xff.append(ex.peer.encode())
    if xff:
        parts += (b"X-Forwarded-For: ", b", ".join(xff), b"\r\n")
    if ex.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif ex.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % ex.content_length)
    if ex.upgrade:
        upgrade = ex.header(b"upgrade")
        if upgrade is not None:
            parts += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Pipe:
    """Sink that writes the upstream response straight into the client exchange."""

    __slots__ = ("conn", "ex", "tunnel_done")

    def __init__(self, ex: Exchange, conn: UpstreamConnection) -> None:
        self.ex = ex
        self.conn = conn
        self.tunnel_done: asyncio.Future[None] | None = None

    def on_informational(self, status: int, headers: HeaderList) -> None:
        if status != 100:  # our own 100 Continue is the engine's business
            self.ex.informational(status, headers)

    def on_head(self, status: int, headers: HeaderList, content_length: int | None) -> None:
        if self.ex.response_done:
            return  # a timeout already answered
        self.ex.start_response(status, headers, content_length)

    def flow(self, paused: bool) -> None:
        if paused:
            self.conn.pause_reading()
        else:
            self.conn.resume_reading()

    def flush(self) -> None:
        self.ex.flush()

    def on_body(self, data: bytes) -> None:
        ex = self.ex
        ex.write(data)
        if ex.write_paused:
            self.conn.pause_reading()

    def on_upgrade(self, headers: HeaderList, upgrade: bytes, rest: bytes) -> None:
        ex = self.ex
        conn = self.conn
        if not ex.upgrade or ex.response_done:
            conn.abort()
            return
        loop = asyncio.get_running_loop()
        self.tunnel_done = done = loop.create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        out = [*headers, (b"Connection", b"Upgrade"), (b"Upgrade", upgrade)]
        to_client = ex.start_tunnel(out, conn.write, finish, conn.write_eof)
        proto = ex._proto

        def client_flow(paused: bool) -> None:
            # The upstream is not taking bytes as fast as the client sends them.
            if paused:
                proto.pause_reading()
            else:
                proto.resume_reading()

        conn.enter_tunnel(_TunnelSink(to_client, ex, conn, finish), finish, client_flow)
        if rest:
            to_client(rest)


class _TunnelSink:
    """Upstream → client bytes once a 101 has switched protocols."""

    __slots__ = ("conn", "ex", "finish", "to_client")

    def __init__(
        self,
        to_client: Callable[[bytes], None],
        ex: Exchange,
        conn: UpstreamConnection,
        finish: Callable[[], None],
    ) -> None:
        self.to_client = to_client
        self.ex = ex
        self.conn = conn
        self.finish = finish

    def on_informational(self, status: int, headers: HeaderList) -> None:
        pass

    def on_head(self, status: int, headers: HeaderList, content_length: int | None) -> None:
        pass

    def on_body(self, data: bytes) -> None:
        self.to_client(data)
        if self.ex.write_paused:
            self.conn.pause_reading()

    def on_upgrade(self, headers: HeaderList, upgrade: bytes, rest: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


async def forward(
    ex: Exchange,
    pool: UpstreamPool,
    host: str,
    port: int,
    rewrite: Rewrite = NO_REWRITE,
    *,
    fresh: bool = False,
) -> int:
    """Proxy ``ex`` to ``host:port`` and stream the answer back. Returns the final status.

    Raises ``BadGateway`` (502) when the upstream fails before a response head arrived; after
    that a failure aborts the client connection instead, since a status was already sent.
    With ``fresh`` a new connection is dialed instead of reusing an idle one.
    """
    head = build_request_head(ex, rewrite, f"{host}:{port}".encode())
    ex.dispatched = True
    conn = None if fresh else pool.take_idle(host, port)
    reused = conn is not None
    if conn is None:
        conn = await pool.connect(host, port)
    proto = ex._proto
    try:
        while True:
            pipe = _Pipe(ex, conn)
            conn.begin(pipe, ex.method == b"HEAD")
            proto.flow_listener = pipe
            conn.write(head)
            pump = (
                asyncio.get_running_loop().create_task(_send_body(ex, conn))
                if ex.has_body
                else None
            )
            try:
                await conn.done
            except BadGateway:
                if conn.got_head:
                    # Headers already went out: the body is cut, so cut the client too.
                    ex.abort()
                    return ex.status
                if pump is not None and pump.done() and not pump.cancelled():
                    failure = pump.exception()
                    if isinstance(failure, ProxyError | ClientDisconnected):
                        raise failure from None
                if reused and pump is None and not ex.response_started and _replayable(ex):
                    # A reused keep-alive connection that died before answering: the
                    # request most likely never reached the application; one fresh try of
                    # an idempotent request is safe (Go's ``Request.isReplayable``).
                    conn.close()
                    conn = await pool.connect(host, port)
                    reused = False
                    continue
                raise
            finally:
                if pump is not None and not pump.done():
                    # The upstream answered before taking the whole body (or we are
                    # giving up): neither connection can carry another request.
                    pump.cancel()
                    conn.reusable = False
                    ex.close_after = True
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pump
            if pipe.tunnel_done is not None:
                await pipe.tunnel_done
                conn.close()
                return 101
            if pump is not None and (pump.cancelled() or pump.exception() is not None):
                conn.reusable = False
            ex.end()
            return ex.status
    finally:
        proto.flow_listener = None
        pool.release(conn)


class _FastForward(_Pipe):
    """One bodyless exchange forwarded with callbacks only: no task, no future.

    Created by ``forward_fast``; reports the outcome once through ``on_done(ex, status)``.
    """

    __slots__ = ("cancelled", "head", "host", "on_done", "pool", "port", "rewrite")

    def __init__(
        self,
        ex: Exchange,
        conn: UpstreamConnection,
        pool: UpstreamPool,
        rewrite: Rewrite,
        on_done: Callable[[Exchange, int], None],
    ) -> None:
        self.ex = ex
        self.conn = conn
        self.tunnel_done = None
        self.pool = pool
        self.rewrite = rewrite
        self.on_done = on_done
        self.cancelled = False

    def cancel(self) -> None:
        """The exchange was answered or abandoned elsewhere (timeout, client gone)."""
        self.cancelled = True
        self.conn.abort()

    def finished(self, error: BaseException | None) -> None:
        ex = self.ex
        conn = self.conn
        ex._proto.flow_listener = None
        ex.canceller = None
        self.pool.release(conn)
        if error is None:
            ex.end()
        elif self.cancelled:
            pass
        elif conn.got_head:
            ex.abort()  # headers went out: the body is cut, so cut the client too
        elif not ex.response_started:
            if _replayable(ex):
                # A pooled keep-alive connection that died before answering: for a request
                # that may be sent twice, one fresh try (Go's rule). Dialing needs a task.
                ex.task = asyncio.get_running_loop().create_task(self._retry())
                return
            ex.fail(error if isinstance(error, ProxyError) else BadGateway(str(error)))
        self.on_done(ex, ex.status if ex.response_started else 500)

    async def _retry(self) -> None:
        host, port = self.conn.key
        await forward_reporting(ex=self.ex, pool=self.pool, host=host, port=port,
                                rewrite=self.rewrite, on_done=self.on_done, fresh=True)  # fmt: skip


async def forward_reporting(
    ex: Exchange,
    pool: UpstreamPool,
    host: str,
    port: int,
    rewrite: Rewrite,
    on_done: Callable[[Exchange, int], None],
    *,
    fresh: bool = False,
) -> None:
    """``forward`` in a task of the caller's, ending like ``forward_fast``: errors answered
    here, and ``on_done(ex, status)`` called exactly once whatever happens."""
    status = 500
    try:
        status = await forward(ex, pool, host, port, rewrite, fresh=fresh)
    except ProxyError as error:
        ex.fail(error)
        status = error.status
    except (asyncio.CancelledError, ClientDisconnected):
        if not ex.response_done:
            ex.abort()
    finally:
        on_done(ex, status)


def forward_fast(
    ex: Exchange,
    pool: UpstreamPool,
    conn: UpstreamConnection,
    rewrite: Rewrite,
    on_done: Callable[[Exchange, int], None],
) -> None:
    """Forward a bodyless, non-upgrade ``ex`` on the idle pooled ``conn``, without a task.

    The caller checked ``ex`` (no body, no upgrade) and took ``conn`` from
    ``pool.take_idle``. ``on_done(ex, status)`` is called exactly once, from a later
    event-loop callback, when the exchange is over: answered in full, answered with an error
    (502), or cut. It is never called inside a parser callback, so it may start another
    request at once, on ``conn`` too (back in the pool by then). The caller then calls
    ``ex.complete()``. ``ex.cancel()`` stops it.
    """
    head = build_request_head(ex, rewrite, conn.authority)
    ex.dispatched = True
    fast = _FastForward(ex, conn, pool, rewrite, on_done)
    conn.begin(fast, ex.method == b"HEAD", fast.finished)
    ex._proto.flow_listener = fast
    ex.canceller = fast.cancel
    conn.write(head)


_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


def _replayable(ex: Exchange) -> bool:
    """Whether sending ``ex`` twice is harmless: safe method, or an idempotency key."""
    if ex.method in _IDEMPOTENT:
        return True
    return ex.header(b"idempotency-key") is not None or ex.header(b"x-idempotency-key") is not None


async def _send_body(ex: Exchange, conn: UpstreamConnection) -> None:
    """Stream the request body upstream, re-chunking when the client sent it chunked."""
    chunked = ex.chunked
    try:
        while True:
            chunk = await ex.read_body()
            if not chunk:
                break
            if chunked:
                conn.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                conn.write(chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
    except (ProxyError, ClientDisconnected):
        # The client's body broke: the upstream must not see it as complete.
        conn.abort()
        raise
