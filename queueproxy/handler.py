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

Headers the chain needs are read in one pass over the request's header list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.breaker import Breaker
from proxy.client import UpstreamPool
from proxy.deadline import Deadline
from proxy.drain import Drainer
from proxy.errors import ProxyError, QueueFull
from proxy.forward import Rewrite, forward, forward_fast, forward_reporting
from proxy.headers import Header, connection_tokens
from proxy.http1 import Exchange
from proxy.stats import RequestStats
from queueproxy.forwarded import forwarded_value
from queueproxy.metrics import RequestMetrics, route_tag
from queueproxy.metrics_otel import OtelRequestMetrics
from queueproxy.readiness import ReadinessProber
from queueproxy.requestlog import RequestLogEntry, RequestLogger

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
    }
)
_SHUTTING_DOWN = b"shutting down\n"
_SNIFFED_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_HASH_MISSING = b'a probe request must contain a non-empty "K-Network-Hash" header\n'


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


class QueueProxyHandler:
    """``await handler(ex)`` serves one exchange on the serving port."""

    def __init__(self, state: QueueProxyState) -> None:
        self.s = state
        self._loop = asyncio.get_running_loop()
        # Bound once: a queued request then costs no closure (``Breaker.enqueue``).
        self._on_grant = self._granted
        self._on_leave = self._leave_queue

    def fast(self, ex: Exchange) -> bool:
        """The task-free path: a plain bodyless request when a slot and a connection are free.

        Everything else (probes, bodies, upgrades, a full breaker, no idle upstream
        connection, request logging) returns False and takes ``__call__`` in a task.
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
            rewrite = _REWRITE
            proxied = False
        else:
            h = _scan(ex)
            ex.user = h  # reused by ``__call__`` if this path declines
            if (
                b"k-network-probe" in h
                or b"k-kubelet-probe" in h
                or h.get(b"user-agent", b"").startswith(_PROBE_UA_PREFIXES)
            ):
                return False
            rewrite = _rewrite(ex, h)
            proxied = h.get(b"k-proxy-request") == b"activator"
        pool = s.pool
        breaker = s.breaker
        ticket = None
        if breaker is not None:
            try:
                ticket = breaker.take(self._on_grant, ex, self._on_leave)
            except QueueFull:
                return False  # the task path answers 503 and counts it
        conn = None
        if ticket is None:
            conn = pool.take_idle(s.user_host, s.user_port)
            if conn is None:
                if breaker is not None:
                    breaker.release()
                return False
        if s.drainer.draining:
            s.drainer.on_request()
        started = ex.started_at
        s.stats.req_in(started, proxied)
        s.deadline.watch(ex)
        # [headers, arrival, proxied, app start, rewrite]: a queued request's app time
        # starts at its grant, which sets the app start.
        ex.user = [h, started, proxied, started, rewrite]
        if ticket is not None:
            # Waiting in the breaker's queue as a callback, not a task (knative §1.5: the
            # stats above count the queued time as concurrency).
            ex.canceller = ticket.leave
            return True
        assert conn is not None
        if s.metrics is not None and breaker is not None:
            s.metrics.set_queue_depth(breaker.in_flight)
        forward_fast(ex, pool, conn, rewrite, self._fast_done)
        return True

    def _granted(self, ex: Exchange) -> None:
        """A queued request got its breaker slot: forward it now."""
        s = self.s
        user = ex.user
        user[3] = self._loop.time()
        if s.metrics is not None and s.breaker is not None:
            s.metrics.set_queue_depth(s.breaker.in_flight)
        rewrite = user[4]
        conn = s.pool.take_idle(s.user_host, s.user_port)
        if conn is None:
            # No idle upstream connection: dialing needs a task.
            ex.canceller = None
            ex.task = self._loop.create_task(
                forward_reporting(ex, s.pool, s.user_host, s.user_port, rewrite, self._fast_done)
            )
            return
        forward_fast(ex, s.pool, conn, rewrite, self._fast_done)

    def _leave_queue(self, ex: Exchange) -> None:
        """A queued request's client left or its timeout answered (its ticket has given
        back its place)."""
        h, started, proxied, _, _ = ex.user
        now = self._loop.time()
        self.s.stats.req_out(now, proxied)
        self.s.deadline.forget(ex)
        if self.s.metrics is not None:
            final = ex.status if ex.response_started else 500
            self.s.metrics.record_request(final, now - started, _tag(h))
        ex.complete()

    def _fast_done(self, ex: Exchange, status: int) -> None:
        s = self.s
        h, started, proxied, app_started, _ = ex.user
        now = self._loop.time()
        if s.breaker is not None:
            # The next queued request is granted from the loop, with the others this loop
            # iteration frees: their upstream requests then leave together, and the user
            # container wakes once for several of them (granting each one here, at once,
            # measured three times as many backend wakeups and more CPU on both sides).
            s.breaker.release()
        s.stats.req_out(now, proxied)
        s.deadline.live.discard(ex)  # ``Deadline.forget``, without the call
        metrics = s.metrics
        if metrics is not None:
            final = ex.status if ex.response_started else 500
            if final == status:
                tag = "DISABLED" if _TAG_HEADERS.isdisjoint(h) else _tag(h)  # no call, mostly
                metrics.record_both(status, now - started, tag, now - app_started)
            else:
                metrics.record_app_request(status, now - app_started)
                metrics.record_request(final, now - started, _tag(h))
        ex.complete()

    async def __call__(self, ex: Exchange) -> None:
        s = self.s
        h = ex.user if isinstance(ex.user, dict) else _scan(ex)
        ua = h.get(b"user-agent", b"")
        probe = h.get(b"k-network-probe", b"")
        kubelet = bool(h.get(b"k-kubelet-probe"))
        if (kubelet and s.kubelet_header_probes) or ua.startswith(_PROBE_UA_PREFIXES):
            started = self._loop.time()
            await self._health(ex, probe)
            if s.log_probes and s.request_log is not None:
                self._log(ex, h, started)
            return
        if probe == b"probe":
            self._network_probe(ex, h)
            # The request log wraps the drainer in Knative's chain: network probes count too.
            if s.log_probes and s.request_log is not None:
                self._log(ex, h, self._loop.time())
            return
        s.drainer.on_request()
        await self._serve(ex, h, is_probe=bool(probe) or kubelet, kubelet=kubelet)

    # ------------------------------------------------------------------ probes

    async def _health(self, ex: Exchange, probe: bytes) -> None:
        if self.s.drainer.draining:
            ex.send(503, _SHUTTING_DOWN)
            return
        if probe != b"queue":
            # Verbatim, as Go's http.Error writes it (text/plain with nosniff; no escaping).
            ex.send(400, b"unexpected probe header value: " + probe + b"\n")
            return
        if await self.s.prober.check():
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

    # ------------------------------------------------------------------ traffic

    async def _serve(
        self, ex: Exchange, h: dict[bytes, bytes], is_probe: bool, kubelet: bool = False
    ) -> None:
        """Steps 2-7 of the chain in one frame: every ``await`` here is one frame deep."""
        s = self.s
        loop = self._loop
        started = ex.started_at
        deadline = s.deadline
        deadline.watch(ex)
        proxied = h.get(b"k-proxy-request") == b"activator"
        # A kubelet probe that gets this far (v1.23.0, K-Kubelet-Probe without the kube-probe
        # User-Agent) skips the breaker and the stats, as Go's queue.ProxyHandler does.
        stats = None if kubelet else s.stats
        if stats is not None:
            stats.req_in(started, proxied)
        rewrite = _rewrite(ex, h)
        metrics = None if is_probe else s.metrics
        breaker = None if kubelet else s.breaker
        app_status = 0
        app_started = 0.0
        try:
            if breaker is not None:
                await breaker.acquire()  # QueueFull → 503 at once
            try:
                if metrics is not None:
                    if breaker is not None:
                        metrics.set_queue_depth(breaker.in_flight)
                    app_started = loop.time()
                app_status = 500
                app_status = await forward(ex, s.pool, s.user_host, s.user_port, rewrite)
            except ProxyError as error:
                app_status = error.status
                raise
            finally:
                if breaker is not None:
                    breaker.release()
                if metrics is not None:
                    metrics.record_app_request(app_status, loop.time() - app_started)
        except ProxyError as error:
            ex.fail(error)
        finally:
            now = loop.time()
            if stats is not None:
                stats.req_out(now, proxied)
            deadline.forget(ex)
            status = ex.status if ex.response_started else 500
            if metrics is not None:
                metrics.record_request(status, now - started, _tag(h))
            if s.request_log is not None and (not is_probe or s.log_probes):
                self._log(ex, h, started, now)

    # ------------------------------------------------------------------ logging

    def _log(self, ex: Exchange, h: dict[bytes, bytes], started: float, now: float = 0.0) -> None:
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
                code=ex.status if ex.response_started else 500,
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
    return route_tag(
        _text(h.get(b"knative-serving-tag")), _text(h.get(b"knative-serving-default-route"))
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
