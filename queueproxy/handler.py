"""The queue-proxy's request path on the serving port, in Knative's order.

The handler chain is composed here, once, in execution order (knative-dataplane.md §1.4):

1. probes, classified from headers on any path: kubelet / activator / autoscaler probes get the
   health answer (503 ``shutting down`` while draining), ``K-Network-Probe: probe`` gets the
   network-probe answer; everything else resets the drain quiet timer and goes on;
2. request metrics (outermost of the real chain, so 503/504 produced further in count);
3. the timeout handler (revision, response-start and idle timeouts);
4. the Forwarded shim;
5. stats "in" (before the breaker, so queued time counts as concurrency), ``K-Original-Host``
   restored into Host;
6. the breaker (``containerConcurrency`` ≥ 1): 503 ``pending request queue full`` at once when
   the queue is full;
7. app metrics, then the reverse proxy to the user container.

Headers the chain needs are read in one pass over the request's header list. Steps 2-6 and
the end-of-request accounting are written once, in ``begin`` and ``finish``: the task-free
path (``fast``: admission through ``Breaker.take``, forwarding with callbacks) and the task
path (``__call__``: ``await breaker.acquire()``, then the same forwarding awaited) both go
through them. A request is one ``_Request``: its state and its ``Forwarding`` in one object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.dataplane.breaker import Breaker
from proxy.dataplane.concurrency import RequestStats
from proxy.dataplane.deadline import Deadline
from proxy.dataplane.drain import Drainer
from proxy.errors import ProxyError, QueueFull
from proxy.exchange import Exchange
from proxy.forward import Forwarding, Rewrite
from proxy.h2stream import VERSION as H2
from proxy.headers import Header, connection_tokens
from proxy.pool import UpstreamPool
from proxy.upstream import Upstream
from queueproxy.forwarded import forwarded_value
from queueproxy.readiness import ReadinessProber

if TYPE_CHECKING:
    # Loaded by ``queueproxy.main`` only when the environment enables request metrics or
    # the request log: a sidecar without them does not carry their code (idle RSS, issue 17).
    from queueproxy.metrics import RequestMetrics
    from queueproxy.metrics_otel import OtelRequestMetrics
    from queueproxy.requestlog import RequestLogger

# Internal headers that never reach the user container.
_REMOVE = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-original-host"})
_REWRITE = Rewrite(remove=_REMOVE)

_PROBE_UA_PREFIXES = (b"kube-probe/", b"Knative-Activator-Probe", b"Knative-Autoscaling-Probe")
_WANTED = frozenset(
    {
        b"user-agent",
        b"k-kubelet-probe",
        b"k-network-probe",
        b"k-network-hash",
        b"k-proxy-request",
        b"k-original-host",
        b"knative-serving-tag",
        b"knative-serving-default-route",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"grpc-timeout",
    }
)
_SHUTTING_DOWN = b"shutting down\n"
_SNIFFED_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_HASH_MISSING = b'a probe request must contain a non-empty "K-Network-Hash" header\n'
_ACTIVATOR_UA = b"Knative-Activator-Probe"
#: Seconds an activator's probe waits for the readiness check before it is answered 503.
#: The activator probes every 200 ms with a 300 ms timeout: a probe held for the 10 s of an
#: aggressive check while the app is down would only time out there (issue 15).
ACTIVATOR_PROBE_WAIT = 0.2


#: ``_WANTED`` but User-Agent, which nearly every request carries.
_RARE = _WANTED - {b"user-agent"}
#: The headers the chain looks at of a request with none of ``_RARE``: never mutated.
_PLAIN: dict[bytes, bytes] = {}


def _scan(ex: Exchange) -> dict[bytes, bytes]:
    """The first value of each header the chain looks at, by lower-case name."""
    names = ex.names
    if _RARE.isdisjoint(names):
        # The common case, found by one C-level pass: at most User-Agent is there.
        if b"user-agent" in names:
            return {b"user-agent": ex.headers[names.index(b"user-agent")][1]}
        return {}
    found: dict[bytes, bytes] = {}
    headers = ex.headers
    for i, low in enumerate(ex.names):
        if low in _WANTED and low not in found:
            found[low] = headers[i][1]
    return found


@dataclass(slots=True)
class QueueProxyState:
    """Everything the request path shares; mutated only from the event loop."""

    pool: UpstreamPool
    user_host: str
    user_port: int
    stats: RequestStats
    drainer: Drainer
    prober: ReadinessProber
    breaker: Breaker | None
    #: v1.10.2's ``revision_*`` names or v1.23.0's ``kn_serving_*`` (same interface).
    metrics: RequestMetrics | OtelRequestMetrics | None
    request_log: RequestLogger | None
    log_probes: bool
    #: The revision, response-start and idle timeouts of every proxied request.
    deadline: Deadline
    #: Whether a non-empty ``K-Kubelet-Probe`` alone makes a health check: v1.10.2's
    #: drainer (knative.dev/pkg of 2023) says yes; v1.23.0's checks the User-Agent only, and
    #: such a request goes on to the app, past the breaker and the stats.
    kubelet_header_probes: bool = True


class _Request(Forwarding):
    """One proxied request in the queue-proxy, from ``begin`` to ``finish``: its state, and
    its forwarding to the user container (one object per request).

    Made as a ``Forwarding`` to the user container; ``QueueProxyHandler.begin`` sets the rest
    (no ``__init__`` of its own: a second Python frame per request, measured):
    ``handler``; ``h``, the headers the chain looks at (``_scan``) by lower-case name;
    ``proxied``, sent by the activator (``K-Proxy-Request``, counted apart in the stats);
    ``app_started``, when it entered the app (its arrival is ``ex.started_at``); and
    ``holds_slot``, whether it holds a breaker slot (``finish`` gives it back).
    """

    __slots__ = ("app_started", "h", "handler", "holds_slot", "proxied")

    handler: QueueProxyHandler
    h: dict[bytes, bytes]
    proxied: bool
    app_started: float
    holds_slot: bool

    #: A ``K-Network-Probe`` other than ``probe``: served, but not measured (``_Probe``).
    is_probe = False
    #: Counted in the stats and held to the breaker (not a kubelet probe: ``_Kubelet``).
    counted = True

    def done(self, status: int) -> None:
        """Forwarded from callbacks: account for the request, then free the exchange."""
        self.handler.finish(self, status)
        self.ex.complete()


class _Probe(_Request):
    """A request with a ``K-Network-Probe`` header other than ``probe``."""

    __slots__ = ()
    is_probe = True


class _Kubelet(_Probe):
    """A ``K-Kubelet-Probe`` that is no health check (v1.23.0 without the kube-probe
    User-Agent): served past the breaker and the stats, as Go's ``queue.ProxyHandler``."""

    __slots__ = ()
    counted = False


class QueueProxyHandler:
    """``await handler(ex)`` serves one exchange on the serving port; ``fast(ex)`` first
    offers to serve it from callbacks (see ``proxy.http1``)."""

    def __init__(self, state: QueueProxyState) -> None:
        self.s = state
        self._loop = asyncio.get_running_loop()
        # Bound once: a request then costs no bound method for these (``Breaker.take``).
        self._on_grant = self._granted
        self._on_leave = self._leave_queue

    # ------------------------------------------------------------ the one chain

    def begin(self, req: _Request, h: dict[bytes, bytes], proxied: bool, slot: bool) -> None:
        """Steps 2-5 on entry: drain timer, stats "in" (before the breaker, so queued time
        counts as concurrency), the timeouts; with ``slot``, the breaker slot is already
        held (``_entered_app``). ``req`` gets the rest of its state here."""
        s = self.s
        ex = req.ex
        req.handler = self
        req.h = h
        req.proxied = proxied
        req.app_started = ex.started_at
        req.holds_slot = False
        if s.drainer.draining:
            s.drainer.on_request()
        if req.counted:
            s.stats.req_in(ex.started_at, proxied)
        grpc = h.get(b"grpc-timeout")  # a gRPC call's own deadline, within the revision's
        (s.deadline if grpc is None else s.deadline.for_grpc(grpc)).watch(ex)
        if slot and s.breaker is not None:
            self._entered_app(req, s.breaker)

    def _entered_app(self, req: _Request, breaker: Breaker) -> None:
        """Step 7 on entry: ``req`` holds a slot of ``breaker`` now."""
        req.holds_slot = True
        metrics = self.s.metrics
        if metrics is not None:
            metrics.set_queue_depth(breaker.in_flight)

    def finish(self, req: _Request, app_status: int | None) -> None:
        """Everything that ends a request, in reverse order: the breaker slot, stats "out",
        the timeouts, metrics (``app_status`` None: it never reached the app), the log."""
        s = self.s
        ex = req.ex
        now = self._loop.time()
        started = ex.started_at
        if req.holds_slot:
            req.holds_slot = False
            assert s.breaker is not None
            # A queued request is granted the freed slot from the loop, with the others this
            # loop iteration frees: their upstream requests then leave together, and the
            # user container wakes once for several of them (granting each one here, at
            # once, measured three times as many backend wakeups and more CPU on both sides).
            s.breaker.release()
        if req.counted:
            s.stats.req_out(now, req.proxied)
        s.deadline.forget(ex)
        metrics = s.metrics
        if metrics is not None and not req.is_probe:
            final = ex.status or 500
            h = req.h
            if app_status is None:
                metrics.record_request(final, now - started, _tag(h))
            elif final == app_status:
                tag = "DISABLED" if _TAG_HEADERS.isdisjoint(h) else _tag(h)  # no call, mostly
                metrics.record_both(final, now - started, tag, now - req.app_started)
            else:
                metrics.record_app_request(app_status, now - req.app_started)
                metrics.record_request(final, now - started, _tag(h))
        if s.request_log is not None and (not req.is_probe or s.log_probes):
            self._log(ex, req.h, started, now)

    # ------------------------------------------------------- task-free path

    def fast(self, ex: Exchange) -> bool:
        """The task-free path: a plain bodyless request when a breaker place (a slot, or a
        place in its queue) and, for a slot, an idle upstream connection are free.

        Everything else (probes, bodies, upgrades, a full breaker, no idle upstream
        connection, request logging) returns False, having changed nothing, and takes
        ``__call__`` in a task.
        """
        s = self.s
        if ex.chunked or ex.content_length or ex.upgrade or s.request_log is not None:
            return False
        names = ex.names
        if _RARE.isdisjoint(names):
            # A plain request (nearly all of them, found by one C-level pass): no probe
            # header, nothing to restore, shim or tag; only its User-Agent can make it a
            # probe.
            if b"user-agent" in names and ex.headers[names.index(b"user-agent")][1].startswith(
                _PROBE_UA_PREFIXES
            ):
                return False
            h = _PLAIN
            proxied = False
            req = _Request(ex, s.pool, s.user_host, s.user_port, _REWRITE)
        else:
            h = _scan(ex)
            if (
                b"k-network-probe" in h
                or b"k-kubelet-probe" in h
                or h.get(b"user-agent", b"").startswith(_PROBE_UA_PREFIXES)
            ):
                return False
            proxied = h.get(b"k-proxy-request") == b"activator"
            req = _Request(ex, s.pool, s.user_host, s.user_port, _rewrite(ex, h))
        pool = s.pool
        breaker = s.breaker
        ticket = None
        if breaker is not None:
            try:
                ticket = breaker.take(self._on_grant, req, self._on_leave)
            except QueueFull:
                return False  # the task path answers 503 and counts it
        conn: Upstream | None = None
        if ticket is None:
            conn = pool.take(s.user_host, s.user_port, ex.version is H2)
            if conn is None:
                if breaker is not None:
                    breaker.release()
                return False
        if ticket is not None:
            # Waiting in the breaker's queue as a callback, not a task (knative §1.5: the
            # stats in ``begin`` count the queued time as concurrency).
            self.begin(req, h, proxied, False)
            ex.canceller = ticket.leave
            return True
        self.begin(req, h, proxied, True)
        req.start(conn)
        return True

    def _granted(self, req: _Request) -> None:
        """A queued request got its breaker slot: forward it now."""
        s = self.s
        ex = req.ex
        ex.canceller = None
        req.app_started = self._loop.time()
        assert s.breaker is not None
        self._entered_app(req, s.breaker)
        req.start(s.pool.take(s.user_host, s.user_port, ex.version is H2))  # none: it dials

    def _leave_queue(self, req: _Request) -> None:
        """A queued request's client left or its timeout answered (its ticket has given
        back its place)."""
        self.finish(req, None)
        req.ex.complete()

    # ------------------------------------------------------------- task path

    async def __call__(self, ex: Exchange) -> None:
        s = self.s
        h = _scan(ex)
        ua = h.get(b"user-agent", b"")
        probe = h.get(b"k-network-probe", b"")
        kubelet = bool(h.get(b"k-kubelet-probe"))
        if (kubelet and s.kubelet_header_probes) or ua.startswith(_PROBE_UA_PREFIXES):
            started = self._loop.time()
            await self._health(ex, probe, ua)
            if s.log_probes and s.request_log is not None:
                self._log(ex, h, started)
            return
        if probe == b"probe":
            self._network_probe(ex, h)
            # The request log wraps the drainer in Knative's chain: network probes count too.
            if s.log_probes and s.request_log is not None:
                self._log(ex, h, self._loop.time())
            return
        proxied = h.get(b"k-proxy-request") == b"activator"
        kind = _Kubelet if kubelet else _Probe if probe else _Request
        req = kind(ex, s.pool, s.user_host, s.user_port, _rewrite(ex, h))
        self.begin(req, h, proxied, False)
        app_status: int | None = None
        try:
            breaker = s.breaker if req.counted else None
            if breaker is not None:
                await breaker.acquire()  # QueueFull → 503 at once
                req.app_started = self._loop.time()
                self._entered_app(req, breaker)
            app_status = 500
            app_status = await req.run(s.pool.take_idle(s.user_host, s.user_port))
        except ProxyError as error:
            if app_status is not None:
                app_status = error.status
            ex.fail(error)
        finally:
            self.finish(req, app_status)

    # ------------------------------------------------------------------ probes

    async def _health(self, ex: Exchange, probe: bytes, ua: bytes = b"") -> None:
        if self.s.drainer.draining:
            ex.send(503, _SHUTTING_DOWN)
            return
        if probe != b"queue":
            # Verbatim, as Go's http.Error writes it (text/plain with nosniff; no escaping).
            ex.send(400, b"unexpected probe header value: " + probe + b"\n")
            return
        check = self.s.prober.check()
        if ua.startswith(_ACTIVATOR_UA):
            try:
                # The check itself is shielded: it goes on for the next probe.
                ready = await asyncio.wait_for(check, ACTIVATOR_PROBE_WAIT)
            except TimeoutError:
                ready = False
        else:
            ready = await check
        if ready:
            # Go writes the body without http.Error: sniffed type, no nosniff header.
            ex.send(200, b"queue", headers=[_SNIFFED_TEXT], content_type=None)
        else:
            ex.send(503)

    def _network_probe(self, ex: Exchange, h: dict[bytes, bytes]) -> None:
        if self.s.drainer.draining:
            ex.send(503, _SHUTTING_DOWN)
            return
        digest = h.get(b"k-network-hash", b"")
        if not digest:
            ex.send(400, _HASH_MISSING)
            return
        ex.send(200, headers=[(b"K-Network-Hash", digest)])

    # ------------------------------------------------------------------ logging

    def _log(self, ex: Exchange, h: dict[bytes, bytes], started: float, now: float = 0.0) -> None:
        from queueproxy.requestlog import RequestLogEntry  # loaded with the logger

        logger = self.s.request_log
        assert logger is not None
        end = now or self._loop.time()
        length = ex.content_length if ex.content_length is not None else (-1 if ex.chunked else 0)
        logger.log(
            RequestLogEntry(
                method=ex.method.decode("latin-1"),
                request_uri=ex.target.decode("latin-1"),
                host=_text(ex.header(b"host")) or "",
                proto=f"HTTP/{ex.version}",
                content_length=length,
                user_agent=_text(h.get(b"user-agent")) or "",
                remote_addr=ex.remote_addr,
                referer=_text(ex.header(b"referer")) or "",
                headers=ex.headers,
                code=ex.status or 500,
                size=ex.bytes_out,
                latency_seconds=max(0.0, end - started),
            )
        )


def _rewrite(ex: Exchange, h: dict[bytes, bytes]) -> Rewrite:
    """The upstream edits for one request: host restore and the Forwarded shim."""
    original_host = h.get(b"k-original-host")
    shim = None
    headers: Sequence[Header] = ex.headers
    if b"connection" in ex.names:
        # Issue 17: what the client names in Connection is dropped before the proxy adds
        # its own fields, so it can neither suppress Forwarded nor forge it (Go's shim
        # reads such fields before its reverse proxy drops them).
        named = connection_tokens(headers)
        if not named.isdisjoint(_SHIM_INPUTS):
            headers = [kv for kv in headers if kv[0].lower() not in named]
            h = {k: v for k, v in h.items() if k not in named}
    if b"forwarded" not in h and (
        b"x-forwarded-for" in h or b"x-forwarded-proto" in h or b"x-forwarded-host" in h
    ):
        shim = forwarded_value(headers)
    if not original_host and shim is None:
        return _REWRITE
    return Rewrite(
        remove=_REMOVE,
        set=((b"Forwarded", shim),) if shim is not None else (),
        host=original_host or None,
    )


_SHIM_INPUTS = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)
_TAG_HEADERS = frozenset({b"knative-serving-tag", b"knative-serving-default-route"})


def _tag(h: dict[bytes, bytes]) -> str:
    if _TAG_HEADERS.isdisjoint(h):
        return "DISABLED"  # the common case, without the calls below
    from queueproxy.metrics import route_tag  # loaded with the metrics that call us

    return route_tag(
        _text(h.get(b"knative-serving-tag")), _text(h.get(b"knative-serving-default-route"))
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
