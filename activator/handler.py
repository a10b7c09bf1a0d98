"""The activator's request path, composed in one place (reference §2.2, DESIGN §4).

Order, outermost first, written once in ``ActivatorHandler.__call__``:

1. probe and health answers (``probes.answer_probe``), before any routing;
2. routing: ``Knative-Serving-Revision`` + ``-Namespace`` when both are present and the
   client is trusted to set them (``activator.trust``; Knative's activator contract), else
   the Host through the ``RouteTable`` (tag host, tag header, weighted split, then the
   route's opt-in header rules and stickiness: ``activator.affinity``), else a
   ``<rev>.<ns>.svc.<cluster-domain>`` Host. Unknown → 404 with no poke and nothing held;
3. metrics (only requests that resolved to a revision are measured);
4. concurrency accounting; the first request of an idle revision pokes the scaler at once;
5. the request deadline (revision timeouts, 504 ``activator request timeout``);
6. the revision throttler, then ``forward`` to the chosen pod with the activator's header
   edits. An upstream failure is a 502 with the engine's one-line reason; never retried.

Steps 3-5 and the end-of-request accounting are written once, in ``begin`` and ``finish``;
the task-free path (``fast``: a free pod now, forwarding with callbacks) and the task path
(``__call__``: waiting in the throttler, ``await forward(...)``) both go through them, with
one ``_Request`` holding a request's state between the two. The handler sees a revision's
throttler only as an ``Admission``.

The handler only reads the routing ``Snapshot``; a single writer task publishes new ones.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from activator.backends import split_dest
from activator.coldstart import ColdStarts, Timing, waits_for_capacity
from activator.kube.objects import private_service_name
from activator.metrics import ActivatorMetrics
from activator.model import Revision, RevisionKey, RoutingConfig
from activator.probes import ProbeAnswer, answer_probe
from activator.routing import RouteTable
from activator.scaler import NullScaler, Scaler
from activator.stats import ConcurrencyReporter
from activator.throttler import Admission, Retired, RevisionThrottler
from activator.trust import NOBODY, RoutingTrust
from proxy.client import Upstream
from proxy.errors import NotFound, ProxyError
from proxy.exchange import Exchange
from proxy.forward import NO_REWRITE, Forwarding, Rewrite
from proxy.headers import Header, HeaderList
from proxy.pool import UpstreamPool

__all__ = ["ActivatorHandler", "Snapshot", "not_found"]

#: A routed request: its revision, the headers its route sets, the Host to keep as
#: ``K-Original-Host`` (None when the client sent one), and headers for the response (a
#: sticky route's ``Set-Cookie``; usually empty).
_Resolved = tuple[Revision, tuple[tuple[str, str], ...], bytes | None, tuple[Header, ...]]
_NO_REPLY: tuple[Header, ...] = ()
_SERVER_TIMING = b"Server-Timing"

#: Client headers never passed to a pod: the split headers (the pod learns nothing from
#: them and must not trust a client's) and the network-probe hash.
_REMOVE = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-network-hash"})
_PROXY_HEADER: Header = (b"K-Proxy-Request", b"activator")
#: The headers ``_resolve`` reads.
_RESOLVE_NAMES = frozenset(
    {
        b"host",
        b"user-agent",
        b"knative-serving-revision",
        b"knative-serving-namespace",
        b"knative-serving-tag",
        b"k-network-probe",
        b"k-network-hash",
        b"k-kubelet-probe",
        b"k-original-host",
    }
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What requests read: the route table and the throttler of every known revision."""

    table: RouteTable
    throttlers: Mapping[RevisionKey, RevisionThrottler] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(RouteTable.build(RoutingConfig()))


def not_found(name: str) -> NotFound:
    return NotFound(
        f'Error getting active endpoint: revision.serving.knative.dev "{name}" not found'
    )


@functools.lru_cache(maxsize=4096)
def _dest(dest: str) -> tuple[str, int, bytes]:
    host, port = split_dest(dest)
    return host, port, dest.encode()


@functools.lru_cache(maxsize=4096)
def _rewrite(
    set_headers: tuple[tuple[str, str], ...], original_host: bytes | None, host_header: bytes
) -> Rewrite:
    """The edits on the way to a pod (§2.7). Few distinct values: cached, not rebuilt."""
    extra = tuple((k.encode(), v.encode()) for k, v in set_headers)
    remove = _REMOVE | frozenset(k.lower() for k, _ in extra)
    headers: tuple[Header, ...] = (_PROXY_HEADER, *extra)
    if original_host is not None:
        headers = (*headers, (b"K-Original-Host", original_host))
    return Rewrite(remove=remove, set=headers, host=host_header)


_PASSTHROUGH_HEADER = ("K-Passthrough-Lb", "true")


@functools.lru_cache(maxsize=4096)
def _private_host(namespace: str, name: str) -> bytes:
    return f"{private_service_name(name)}.{namespace}".encode()


def _passthrough(
    revision: Revision | None, set_headers: tuple[tuple[str, str], ...]
) -> tuple[tuple[tuple[str, str], ...], bytes]:
    """Knative's passthrough load balancing: ``Host: <rev>-private.<ns>`` and
    ``K-Passthrough-Lb: true`` instead of the pod's address."""
    if revision is None:
        raise ProxyError("revision was removed while the request waited")
    return (*set_headers, _PASSTHROUGH_HEADER), _private_host(revision.namespace, revision.name)


#: The clock of cold-start stamps (the control plane's too).
timing_clock = time.monotonic


def _always_ready() -> str | None:
    return None


def _revision_from_host(host: str, cluster_domain: str) -> RevisionKey | None:
    """``<rev>.<ns>.svc.<cluster-domain>[:port]`` → (ns, rev), Knative's fallback."""
    parts = host.split(".", 3)
    if len(parts) != 4 or parts[2] != "svc":
        return None
    if parts[3].rsplit(":", 1)[0].lower().rstrip(".") != cluster_domain:
        return None
    return parts[1], parts[0]


class _Request(Forwarding):
    """One routed request in the activator, from ``begin`` to ``finish``: its state, and its
    forwarding to the pod (one object per request; the task path sets the pod once the
    throttler has chosen it)."""

    __slots__ = ("admission", "handler", "release", "revision")

    # Set by ``ActivatorHandler.begin`` (no ``__init__`` of its own: a second Python frame
    # per request, measured). ``admission`` and ``release``: the slots taken on the
    # task-free path, given back by ``finish``.
    handler: ActivatorHandler
    revision: Revision
    admission: Admission | None
    release: Callable[[], None] | None

    def done(self, status: int) -> None:
        """Forwarded from callbacks: account for the request, then free the exchange."""
        self.handler.finish(self)
        self.ex.complete()


class _Annotated(_Request):
    """A request whose response gets headers of the activator's own: a sticky route's
    ``Set-Cookie`` (``reply``), and for one that waited for capacity its cold-start
    breakdown (``timing``: recorded at the pod's first byte, shown as ``Server-Timing`` when
    enabled). Only such requests pay for the subclass."""

    __slots__ = ("reply", "timing")

    reply: tuple[Header, ...]
    timing: Timing | None

    async def run(self, conn: Upstream | None) -> int:
        timing = self.timing
        if timing is not None:
            timing.dispatched = timing_clock()
        return await super().run(conn)

    def on_head(self, status: int, headers: HeaderList, content_length: int | None) -> None:
        if self.reply:
            headers.extend(self.reply)
        timing = self.timing
        if timing is not None:
            self.timing = None
            value = self.handler.cold_starts.first_byte(timing)
            if value is not None:
                headers.append((_SERVER_TIMING, value))
        super().on_head(status, headers, content_length)


class ActivatorHandler:
    """The engine handler of the activator's data port. See the module docstring."""

    def __init__(
        self,
        pool: UpstreamPool,
        reporter: ConcurrencyReporter,
        metrics: ActivatorMetrics,
        scaler: Scaler | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.pool = pool
        self.reporter = reporter
        self.metrics = metrics
        self.scaler: Scaler = scaler or NullScaler()
        self.rand = rand or random.random
        self.snapshot = Snapshot.empty()
        #: ``enable-mesh-pod-addressability``: pods are addressed through the mesh by their
        #: private Service's name, ``K-Passthrough-Lb`` telling the mesh to keep the pod.
        self.passthrough = False
        #: Why kubelet probes fail right now (None: ready); the activator replaces it.
        self.health_check: Callable[[], str | None] = _always_ready
        #: Whose routing headers are believed; others' are ignored (and always stripped).
        self.routing_trust: RoutingTrust = NOBODY
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Milestones and breakdowns of the requests that waited for capacity.
        self.cold_starts = ColdStarts(timing_clock)

    def _resolve(self, ex: Exchange) -> _Resolved | ProbeAnswer:
        """Steps 1-2: a probe's answer, or the revision (a ``ProxyError`` when there is none:
        404). Nothing is sent or held: the caller acts on the result."""
        ua = kubelet = nprobe = nhash = host = rev = ns = tag = orig = None
        headers = ex.headers
        for i, low in enumerate(ex.names):
            if low not in _RESOLVE_NAMES:
                continue
            value = headers[i][1]  # the last value wins
            if low == b"host":
                host = value
            elif low == b"user-agent":
                ua = value
            elif low == b"knative-serving-revision":
                rev = value
            elif low == b"knative-serving-namespace":
                ns = value
            elif low == b"knative-serving-tag":
                tag = value
            elif low == b"k-network-probe":
                nprobe = value
            elif low == b"k-network-hash":
                nhash = value
            elif low == b"k-kubelet-probe":
                kubelet = value
            else:
                orig = value  # k-original-host
        if kubelet or nprobe or (ua is not None and ua.startswith(b"kube-probe/")):
            answer = answer_probe(ua, kubelet, nprobe, nhash, self.health_check())
            if answer is not None:
                return answer

        table = self.snapshot.table
        set_headers: tuple[tuple[str, str], ...] = ()
        reply = _NO_REPLY
        if rev and ns and self.routing_trust.trusts(ex.peer):
            revision = table.lookup_revision(ns.decode("latin-1"), rev.decode("latin-1"))
            if revision is None:
                raise not_found(rev.decode("latin-1"))
        else:
            decision = table.resolve_raw(host or b"", tag, self.rand)
            if decision is not None:
                if decision.policy is not None:  # header rules, stickiness (opt-in)
                    decision, reply = decision.policy.choose(ex, decision)
                revision = table.lookup_revision(decision.namespace, decision.revision)
                if revision is None:
                    raise not_found(decision.revision)
                set_headers = decision.set_headers
            else:
                host_text = host.decode("latin-1") if host is not None else ""
                key = _revision_from_host(host_text, table.cluster_domain)
                if key is None:
                    raise NotFound(
                        f'Error getting active endpoint: no route for host "{host_text}"'
                    )
                revision = table.lookup_revision(*key)
                if revision is None:
                    raise not_found(key[1])
        return revision, set_headers, host if orig is None else None, reply

    # ------------------------------------------------------------ the one chain

    def begin(
        self,
        req: _Request,
        revision: Revision,
        admission: Admission | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Steps 3-5 on entry: concurrency "in" (the first request of an idle revision
        pokes the scaler), the revision's timeouts. ``req`` gets the rest of its state."""
        req.handler = self
        req.revision = revision
        req.admission = admission
        req.release = release
        # As Knative's ingress: the revision's port name picks the protocol to its pods
        # (h2c for ``h2c``), whatever the client spoke.
        req.h2 = revision.protocol == "h2c"
        poke = self.reporter.request_in(revision.key, req.ex.started_at)
        if poke is not None:
            self.scaler.poke(poke)
        revision.deadline.watch(req.ex)

    def finish(self, req: _Request) -> None:
        """Everything that ends a request: the slots of the task-free path, the timeouts,
        concurrency "out", the request metric."""
        admission = req.admission
        if admission is not None:
            release = req.release
            assert release is not None
            req.admission = req.release = None
            admission.done(release)
        revision = req.revision
        ex = req.ex
        revision.deadline.forget(ex)
        loop = self._loop
        if loop is None:
            # Looked up once: ``get_running_loop()`` costs a getpid() syscall per call.
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        self.reporter.request_out(revision.key, now)
        if ex.status:
            self.metrics.record_request(revision, ex.status, now - ex.started_at)

    # ------------------------------------------------------- task-free path

    def fast(self, ex: Exchange) -> bool:
        """The task-free path: a routed bodyless request whose revision has a free pod now.

        Probes, routing errors, bodies, upgrades and queueing return False, having changed
        nothing, and take ``__call__`` in a task (which routes again).
        """
        if ex.has_body or ex.upgrade:
            return False
        try:
            resolved = self._resolve(ex)
        except ProxyError:
            return False  # the task path resolves again and answers the error
        if isinstance(resolved, ProbeAnswer):
            return False
        revision, set_headers, original_host, reply = resolved
        admission: Admission | None = self.snapshot.throttlers.get(revision.key)
        if admission is None:
            return False
        taken = admission.try_now()
        if taken is None:
            return False
        release, tracker = taken
        host, port, host_header = _dest(tracker.dest)
        if self.passthrough:
            set_headers, host_header = _passthrough(revision, set_headers)
        rewrite = _rewrite(set_headers, original_host, host_header)
        req: _Request
        if reply:
            req = _Annotated(ex, self.pool, host, port, rewrite)
            req.reply = reply
            req.timing = None
        else:
            req = _Request(ex, self.pool, host, port, rewrite)
        self.begin(req, revision, admission, release)
        req.start(self.pool.take_idle(host, port))
        return True

    # ------------------------------------------------------------- task path

    async def __call__(self, ex: Exchange) -> None:
        resolved = self._resolve(ex)  # a ProxyError is answered by the engine
        if isinstance(resolved, ProbeAnswer):
            ex.send(resolved.status, resolved.body, list(resolved.headers))
            return
        revision, set_headers, original_host, reply = resolved
        timing = self.cold_starts.arrived(
            revision, waits_for_capacity(self.snapshot.throttlers.get(revision.key))
        )
        req: _Request
        if reply or timing is not None:
            req = annotated = _Annotated(ex, self.pool, "", 0, NO_REWRITE)
            annotated.reply = reply
            annotated.timing = timing
        else:
            # The pod: once the throttler chose it.
            req = _Request(ex, self.pool, "", 0, NO_REWRITE)
        self.begin(req, revision)
        try:
            await self._throttled(req, revision.key, set_headers, original_host)
        except ProxyError as exc:
            ex.fail(exc)
        finally:
            self.finish(req)

    async def _throttled(
        self,
        req: _Request,
        key: RevisionKey,
        set_headers: tuple[tuple[str, str], ...],
        original_host: bytes | None,
    ) -> None:
        """Step 6: wait for the revision's throttler, then forward to the pod it chose."""

        async def send(dest: str) -> int:
            host, port, host_header = _dest(dest)
            extra = set_headers
            if self.passthrough:
                extra, host_header = _passthrough(self.snapshot.table.lookup_revision(*key), extra)
            req.host = host
            req.port = port
            req.rewrite = _rewrite(extra, original_host, host_header)
            return await req.run(self.pool.take_idle(host, port))

        while True:
            admission: Admission | None = self.snapshot.throttlers.get(key)
            if admission is None:
                # The revision left the configuration while this request waited.
                raise ProxyError(f'revision "{key[1]}" was removed while the request waited')
            try:
                await admission.try_(send)
                return
            except Retired:
                continue
