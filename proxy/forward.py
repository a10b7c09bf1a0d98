"""Reverse-proxying one exchange to one upstream: the part both components share.

``Forwarding`` is the one implementation: it writes the upstream request head
(``proxy.request_head``), takes an idle pooled connection or dials one, streams the body with
back-pressure, pipes the response into the client exchange as llhttp parses it, splices a
101 into a tunnel, and reports the outcome once through a callback. A bodyless request on an
idle connection runs with no task at all; dialing and body streaming run in tasks of its own.
``Forwarding.finished`` is the one place that decides what a failure means: the body was cut
(abort the client too), the client's body broke (its error), a replay, or a 502. ``forward``
is the ``async`` form, a thin adapter that awaits the callback.

It never retries a request that may have reached the upstream; the one exception is Go's: an
idempotent request with no body whose reused keep-alive connection turned out to be dead
before any response byte is sent once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.client import NotProcessed, Upstream, UpstreamClosed
from proxy.errors import BadGateway, ProxyError
from proxy.exchange import ClientDisconnected, Exchange, answer_error
from proxy.h2stream import VERSION as H2
from proxy.headers import HeaderList
from proxy.pool import UpstreamPool
from proxy.request_head import NO_REWRITE, Rewrite, build_request_head
from proxy.states import ResponseState

__all__ = ["NO_REWRITE", "Forwarding", "OnDone", "Rewrite", "build_request_head", "forward"]

_PENDING, _, _DONE = ResponseState


#: How a forwarding reports its end: ``on_done(ex, status)``, exactly once, never from inside
#: a parser callback (so it may start another request at once, on the same connection too).
OnDone = Callable[[Exchange, int], None]


def _no_callback(ex: Exchange, status: int) -> None:
    """The ``on_done`` of a forwarding that overrides ``done`` or is awaited (``run``)."""


class Forwarding:
    """One exchange proxied to one upstream; the sink the upstream response flows into.

    ``Forwarding(ex, pool, host, port, rewrite, on_done).start(conn)`` proxies ``ex`` to
    ``host:port``; ``done(status)`` reports the end, exactly once: it calls
    ``on_done(ex, status)``, or a subclass overrides it (a component's per-request state
    can be its forwarding: one object per request), or ``run`` awaits it. ``conn`` is an idle
    connection the caller took from ``pool`` (``take_idle``); with None one is dialed. By
    the time ``on_done`` runs the client has its answer: the upstream's response, the error
    that ended the exchange (502 when the upstream failed before a response head, the
    client body's own error), or a cut connection when the response had started. The
    caller then calls ``ex.complete()`` (callback owners) or returns (task owners).
    ``ex.cancel()`` stops it. ``forward`` is the same, awaited.

    Its life: connect (the connection handed in, or a dial in a task), send the head (and
    the body from a task), stream the response, maybe tunnel, then ``finished`` decides.
    """

    __slots__ = (
        "cancelled",
        "conn",
        "error",
        "ex",
        "h2",
        "host",
        "on_done",
        "pool",
        "port",
        "rewrite",
        "task",
        "tunnel",
        "waiter",
    )

    def __init__(
        self,
        ex: Exchange,
        pool: UpstreamPool,
        host: str,
        port: int,
        rewrite: Rewrite,
        on_done: OnDone = _no_callback,
    ) -> None:
        self.ex = ex
        #: Whether the upstream request goes as h2c: by default the client's protocol,
        #: mirrored as Knative's transports do; a component that knows the upstream's
        #: protocol (the activator: the revision's port name) sets it before ``start``.
        self.h2 = ex.version is H2
        self.pool = pool
        self.host = host
        self.port = port
        self.on_done = on_done
        self.rewrite = rewrite
        self.conn: Upstream | None = None
        #: The dial (while ``conn`` is None), then the request body's pump, if any.
        self.task: asyncio.Task[None] | None = None
        #: Set once a 101 switched to a tunnel; the outcome is reported when it closes.
        self.tunnel = False
        self.cancelled = False
        #: What ``run`` awaits; None for a forwarding reporting through ``done``.
        self.waiter: asyncio.Future[int] | None = None
        # ``error`` (what ended the exchange early, answered already; ``forward`` raises
        # it again) is set only then: one store less per request.

    # ------------------------------------------------------------------ lifecycle

    def start(self, conn: Upstream | None) -> None:
        """Send on ``conn`` (an idle pooled one or one just dialed), else dial one now.

        With ``h2`` the request goes as h2c (a call on a pooled HTTP/2 connection), else as
        HTTP/1.1.
        """
        ex = self.ex
        ex.dispatched = True
        ex.canceller = self.cancel
        if self.h2 and (conn is None or not conn.multiplexed):
            if conn is not None:
                self.pool.release(conn)  # an idle HTTP/1.1 connection taken for it, unused
            conn = self.pool.take_h2(self.host, self.port)
        if conn is None:
            self.task = ex.conn.ctx.loop.create_task(self._dial())
            return
        self.conn = conn
        conn.begin(self, ex.method == b"HEAD", self.finished)
        ex.conn.flow_listener = self
        conn.send_head(ex, self.rewrite)
        if ex.chunked or ex.content_length:
            self.task = pump = ex.conn.ctx.loop.create_task(_send_body(ex, conn))
            pump.add_done_callback(_retrieved)

    async def _dial(self) -> None:
        pool = self.pool
        try:
            conn: Upstream = await (pool.connect_h2 if self.h2 else pool.connect)(
                self.host, self.port
            )
        except (Exception, asyncio.CancelledError) as exc:
            self.task = None
            self._end(exc)
            return
        self.task = None
        if self.cancelled:
            conn.close()
            self._end(None)
            return
        self.start(conn)

    def cancel(self) -> None:
        """The exchange was answered or abandoned elsewhere (timeout, client gone): stop.
        The outcome is still reported, once the upstream connection is let go."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.conn is None:
            if self.task is not None:
                self.task.cancel()  # the dial
        else:
            self.conn.abort()

    def finished(self, error: BaseException | None) -> None:
        """The upstream exchange is over (None: the response is whole): the one place that
        decides what the client gets."""
        ex = self.ex
        conn = self.conn
        assert conn is not None
        pump = self.task
        failure = None  # what broke the client's body, if it did
        if pump is not None:
            if not pump.done():
                # The upstream answered before taking the whole body (or we are giving
                # up): neither connection can carry another request.
                pump.cancel()
                conn.reusable = False
                ex.close_after = True
            elif pump.cancelled():
                conn.reusable = False
            else:
                failure = pump.exception()
                if failure is not None:
                    conn.reusable = False
        if error is None:
            if self.tunnel:
                return  # reported when the tunnel closes (``_tunnel_closed``)
            # ``_release`` inlined: this is every proxied response's way out (and nothing
            # else can have become the client connection's flow listener yet).
            ex.conn.flow_listener = None
            ex.canceller = None
            self.pool.release(conn)
            ex.end()
            if self.waiter is None:
                self.done(ex.status)
            else:
                self._report(ex.status)
            return
        self._release(conn)
        if self.cancelled:
            self._report(ex.status or 500)
        elif conn.got_head:
            # Headers went out: the body is cut, so cut the client too. Reported first: the
            # cut closes the client connection, whose loss would otherwise reach a waiting
            # ``forward`` as a cancellation before this outcome does.
            self._report(ex.status)
            ex.abort()
        elif isinstance(failure, ProxyError | ClientDisconnected):
            self._end(failure)  # the client's body broke: too large, malformed, gone
        elif isinstance(error, NotProcessed) and ex.response is _PENDING and not ex.body_received:
            # The upstream refused the HTTP/2 stream or said GOAWAY before it: it provably
            # never ran, so it goes again on another connection, whatever its method (no
            # body byte was taken from the client yet, so none is lost).
            self.conn = self.task = None
            self.start(None)
        elif (
            conn.requests > 1
            and pump is None
            and isinstance(error, UpstreamClosed)
            and conn.untouched
            and ex.response is _PENDING
            and _replayable(ex)
        ):
            # A reused keep-alive connection that closed before one byte of an answer: the
            # request most likely never reached the application; one fresh try of an
            # idempotent request is safe (Go's ``Request.isReplayable``). Any answer byte
            # (malformed, an unasked 101) proves it arrived: never replayed then.
            self.conn = self.task = None
            self.start(None)
        else:
            self._end(error if isinstance(error, ProxyError) else BadGateway(str(error)))

    def _release(self, conn: Upstream) -> None:
        ex = self.ex
        if ex.conn.flow_listener is self:
            ex.conn.flow_listener = None
        ex.canceller = None
        self.pool.release(conn)

    def _end(self, error: BaseException | None) -> None:
        """Answer what ended the exchange early (unless cancelled), then report."""
        ex = self.ex
        ex.canceller = None
        status = ex.status or 500
        if error is not None and not self.cancelled:
            self.error = error
            answer_error(ex, error)
            if isinstance(error, ProxyError):
                status = error.status
        self._report(status)

    def _report(self, status: int) -> None:
        waiter = self.waiter
        if waiter is None:
            self.done(status)
        elif not waiter.done():
            waiter.set_result(status)

    def done(self, status: int) -> None:
        """The exchange is over, its answer given: ``on_done(ex, status)``, unless a
        subclass says otherwise. Called once, from an event-loop callback."""
        self.on_done(self.ex, status)

    async def run(self, conn: Upstream | None) -> int:
        """``start(conn)``, then wait for the end: the ``async`` form. Returns the final
        status, or raises the error that ended the exchange early (answered already);
        cancelling the caller cancels the forwarding."""
        waiter: asyncio.Future[int] = self.ex.conn.ctx.loop.create_future()
        self.waiter = waiter
        self.start(conn)
        try:
            status = await waiter
        except asyncio.CancelledError:
            self.cancel()
            raise
        error: BaseException | None = getattr(self, "error", None)
        if error is not None:
            raise error
        return status

    def _tunnel_closed(self) -> None:
        if self.tunnel:
            self.tunnel = False
            conn = self.conn
            assert conn is not None
            conn.close()
            self._release(conn)
            self._report(101)

    # ------------------------------------------------------------- response sink

    def on_informational(self, status: int, headers: HeaderList) -> None:
        if status != 100:  # our own 100 Continue is the engine's business
            self.ex.informational(status, headers)

    def on_head(self, status: int, headers: HeaderList, content_length: int | None) -> None:
        if self.ex.response is _DONE:
            return  # a timeout already answered
        self.ex.start_response(status, headers, content_length)

    def flow(self, paused: bool) -> None:
        conn = self.conn
        if conn is not None:
            if paused:
                conn.pause_reading()
            else:
                conn.resume_reading()

    def flush(self) -> None:
        self.ex.flush()

    def on_trailers(self, headers: HeaderList) -> None:
        self.ex.trailers(headers)

    def on_body(self, data: bytes) -> None:
        ex = self.ex
        ex.write(data)
        if ex.conn.write_paused:
            conn = self.conn
            assert conn is not None
            conn.pause_reading()

    def on_upgrade(self, headers: HeaderList, upgrade: bytes, rest: bytes) -> None:
        ex = self.ex
        conn = self.conn
        assert conn is not None
        if not ex.upgrade or ex.response is _DONE:
            conn.abort()
            return
        self.tunnel = True
        finish = self._tunnel_closed
        out = [*headers, (b"Connection", b"Upgrade"), (b"Upgrade", upgrade)]
        to_client = ex.start_tunnel(out, conn.write, finish, conn.write_eof)
        proto = ex.conn

        def client_flow(paused: bool) -> None:
            # The upstream is not taking bytes as fast as the client sends them.
            if paused:
                proto.pause_reading()
            else:
                proto.resume_reading()

        conn.enter_tunnel(_TunnelSink(to_client, ex, conn, finish), finish, client_flow)
        if rest:
            to_client(rest)


def _retrieved(task: asyncio.Task[None]) -> None:
    # A body pump's failure is read by ``Forwarding.finished``; when the exchange ended
    # without looking (a cancel), it is read here so asyncio does not report it as lost.
    if not task.cancelled():
        task.exception()


class _TunnelSink:
    """Upstream → client bytes once a 101 has switched protocols."""

    __slots__ = ("conn", "ex", "finish", "to_client")

    def __init__(
        self,
        to_client: Callable[[bytes], None],
        ex: Exchange,
        conn: Upstream,
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

    def on_trailers(self, headers: HeaderList) -> None:
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
    """``Forwarding`` awaited: proxy ``ex`` to ``host:port``; returns the final status.

    Raises the error that ended the exchange early (already answered: a 502 ``BadGateway``
    when the upstream failed before a response head, the body's own error), so a caller's
    accounting sees it; a failure after the head cut the client instead, and returns. With
    ``fresh`` a new connection is dialed instead of reusing an idle one. Cancelling the
    caller cancels the forwarding.
    """
    forwarding = Forwarding(ex, pool, host, port, rewrite)
    return await forwarding.run(None if fresh else pool.take_idle(host, port))


_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


def _replayable(ex: Exchange) -> bool:
    """Whether sending ``ex`` twice is harmless: safe method, or an idempotency key."""
    if ex.method in _IDEMPOTENT:
        return True
    return ex.header(b"idempotency-key") is not None or ex.header(b"x-idempotency-key") is not None


async def _send_body(ex: Exchange, conn: Upstream) -> None:
    """Stream the request body upstream in the framing ``send_head`` announced."""
    try:
        while True:
            chunk = await ex.read_body()
            if not chunk:
                break
            conn.send_body(chunk)
            await conn.drain()
        conn.end_body()
    except (ProxyError, ClientDisconnected):
        # The client's body broke: the upstream must not see it as complete.
        conn.abort()
        raise
