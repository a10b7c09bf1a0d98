"""Wiring of one activator process: servers, the single update writer, reporting, drain.

Tasks and who owns what:

* the *source pump* copies what the ``Source`` yields onto ``updates``: whole ``RoutingConfig``
  snapshots (static file, embedded control plane) or incremental updates, one per cluster
  event (Kubernetes: ``activator.model.IncrementalUpdate`` and ``SourceHealth``);
* pod watchers (``Backends``) put ``BackendsUpdate`` values onto the same queue;
* the *writer* (``_apply_loop``) is the only task that changes routing state. A snapshot
  rebuilds the ``RouteTable`` and publishes a new ``Snapshot``; an incremental update touches
  the one revision it names (its throttler, its table entry, its pod watcher), so its cost
  does not grow with the number of revisions;
* the *reporter* closes the concurrency period every second and hands the batch to the scaler.

Readiness (kubelet probes) fails after SIGTERM, while the source says it is not in step with
its origin (before the first lists, API server unreachable), and while any extra check given
by the caller fails (the Knative scaler's websocket being down).

Drain (``terminate`` then ``drain``): kubelet probes fail at once, traffic is still served for
``drain_seconds``, then the data server stops accepting and waits for in-flight requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

from activator.backends import (
    Backends,
    BackendsUpdate,
    MeshMode,
    Prober,
    WatchOptions,
)
from activator.backends import probe_queue as default_probe
from activator.handler import ActivatorHandler, Snapshot
from activator.kube.objects import private_service_name
from activator.metrics import CONTENT_TYPE, ActivatorMetrics
from activator.model import (
    DEFAULT_QUEUE_DEPTH,
    DEFAULT_TIMEOUT_SECONDS,
    ActivatorsChanged,
    ClusterIPChanged,
    IncrementalUpdate,
    IngressChanged,
    IngressRemoved,
    NetworkChanged,
    PodsChanged,
    PodsRemoved,
    Revision,
    RevisionChanged,
    RevisionKey,
    RevisionRemoved,
    RoutingConfig,
)
from activator.probes import SIGTERM_ERROR
from activator.routing import RouteTable
from activator.scaler import Scaler, WebhookScaler
from activator.settings import DRAIN_SECONDS, Settings
from activator.source import Source, SourceHealth
from activator.stats import ConcurrencyReporter
from activator.throttler import RevisionThrottler
from proxy.http1 import Exchange
from proxy.pool import UpstreamPool
from proxy.runner import settle_gc
from proxy.server import HttpServer

__all__ = ["DRAIN_SECONDS", "Activator", "Settings"]

log = logging.getLogger("sluice.activator")

#: Seconds in-flight requests get past the longest revision timeout when a drain stops
#: listening (``Activator.drain_grace``).
DRAIN_MARGIN = 10.0

Update = RoutingConfig | BackendsUpdate | IncrementalUpdate | SourceHealth


class Activator:
    """One activator process (or one worker of several). ``start``, then ``close`` or drain."""

    def __init__(
        self,
        settings: Settings,
        source: Source,
        scaler: Scaler | None = None,
        probe: Prober = default_probe,
        rand: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        readiness: Iterable[Callable[[], str | None]] = (),
        mesh_mode: MeshMode = MeshMode.AUTO,
        passthrough: bool = False,
    ) -> None:
        self.settings = settings
        self.source = source
        self.pool = UpstreamPool(max_idle_per_host=settings.max_idle_per_host)
        self.reporter = ConcurrencyReporter(settings.pod_name)
        self.webhook: WebhookScaler | None = None
        if scaler is None:
            self.webhook = WebhookScaler(settings.scaler_url)
            scaler = self.webhook
        self.scaler = scaler
        webhook = self.webhook
        self.metrics = ActivatorMetrics(
            settings.pod_name, dropped=(lambda: webhook.dropped) if webhook else None
        )
        self.metrics.watch_queue_depth(self._queue_depths)
        self.handler = ActivatorHandler(self.pool, self.reporter, self.metrics, scaler, rand)
        self.handler.cold_starts.header_everywhere = settings.server_timing
        self.handler.cold_starts.observers.append(self.metrics.record_cold_start)
        self._rng = rng or random.Random()
        self.updates: asyncio.Queue[Update] = asyncio.Queue()
        self.backends = Backends(
            self.updates.put_nowait, probe, settings.probe_interval, settings.probe_timeout
        )
        self.server = HttpServer(self.handler)
        self.metrics_server = HttpServer(self._serve_metrics)
        self.mesh_mode = mesh_mode
        self.passthrough = passthrough
        self._healthy: dict[RevisionKey, BackendsUpdate] = {}
        #: (activators, index) per revision from its public Endpoints, before ``--workers``.
        self._shares: dict[RevisionKey, tuple[int, int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._applied = asyncio.Event()
        self._readiness = list(readiness)
        #: Called by ``close`` after everything else, newest first (clients, scalers).
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self._terminating = False
        self.source_error: str | None = None
        self.handler.health_check = self.health_error
        self.handler.routing_trust = settings.routing_trust
        self.config: RoutingConfig | None = None
        if settings.cluster_domain != "cluster.local":
            self.handler.snapshot = Snapshot(
                RouteTable.build(RoutingConfig(), settings.cluster_domain)
            )

    # ------------------------------------------------------------------ lifecycle

    @property
    def activators(self) -> int:
        return self.settings.workers

    @property
    def index(self) -> int:
        return max(0, self.settings.worker_index) if self.settings.workers > 1 else 0

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def metrics_port(self) -> int:
        return self.metrics_server.port

    async def start(self, wait_for_config: bool = True) -> None:
        """Start the tasks, then listen. With ``wait_for_config`` (the default), listening
        starts only once the source's first snapshot is applied, so no early request is
        answered 404 for want of routes; pass False for a source that may start empty or
        that sends incremental updates (readiness then waits for the source instead)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(), name="source pump"),
            loop.create_task(self._apply_loop(), name="update writer"),
            loop.create_task(self._report_loop(), name="stats reporter"),
        ]
        if self.webhook is not None:
            self.webhook.start()
        if wait_for_config:
            while self.config is None:
                self._applied.clear()
                await self._applied.wait()
        await self.server.start(s.host, s.port, reuse_port=s.workers > 1)
        if s.h2c_port is not None:
            await self.server.start(s.host, s.h2c_port, reuse_port=s.workers > 1)
        await self.metrics_server.start(s.host, s.own_metrics_port)
        settle_gc()
        ports = [str(port) for _, port in self.server.addresses]
        log.info(
            "activator %s (worker %d of %d) serving on port(s) %s, metrics on port %d",
            s.pod_name, self.index, self.activators, ", ".join(ports), self.metrics_port,
        )  # fmt: skip

    @property
    def ports(self) -> list[int]:
        """Every data port listened on (8012, then 8013 when open)."""
        return [port for _, port in self.server.addresses]

    def terminate(self) -> None:
        """Fail kubelet probes from now on (SIGTERM); traffic is still served."""
        self._terminating = True

    def health_error(self) -> str | None:
        """Why kubelet probes fail right now, or None when ready."""
        if self._terminating:
            return SIGTERM_ERROR
        if self.source_error is not None:
            return self.source_error
        for check in self._readiness:
            error = check()
            if error is not None:
                return error
        return None

    async def drain(self) -> None:
        """``terminate``, serve for ``drain_seconds``, then stop after in-flight requests."""
        self.terminate()
        log.info("draining for %gs", self.settings.drain_seconds)
        await asyncio.sleep(self.settings.drain_seconds)
        await self.server.shutdown(grace=self.drain_grace())
        await self.close()

    def drain_grace(self) -> float:
        """How long in-flight requests may still run once the drain stops listening: the
        longest revision timeout known (a hard maximum; Knative's default when none is
        known) and a margin. Then what is left is cut, so a drain always ends."""
        revisions = self.config.revisions if self.config is not None else ()
        longest = max((rev.timeout_seconds for rev in revisions), default=DEFAULT_TIMEOUT_SECONDS)
        return max(longest, 1) + DRAIN_MARGIN

    async def close(self) -> None:
        """Stop everything now (in-flight requests are cut)."""
        await self.server.shutdown(grace=0)
        await self.metrics_server.shutdown(grace=0)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backends.close()
        if self.webhook is not None:
            await self.webhook.close()
        closers, self.closers = self.closers, []
        for closer in reversed(closers):
            await closer()
        self.pool.close()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds after some update was applied (for tests)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._applied.clear()
                await self._applied.wait()

    # ---------------------------------------------------------------- the writer

    async def _pump(self) -> None:
        async for update in self.source.updates():
            self.updates.put_nowait(update)

    async def _apply_loop(self) -> None:
        while True:
            update = await self.updates.get()
            try:
                self.apply(update)
            except Exception:
                log.exception("applying %r failed", type(update).__name__)
            self._applied.set()

    def apply(self, update: Update) -> None:
        """Apply one update of any kind (writer task only)."""
        if isinstance(update, BackendsUpdate):
            self.apply_backends(update)
        elif isinstance(update, PodsChanged):
            revision = self.handler.snapshot.table.lookup_revision(*update.key)
            self.backends.set_pods(
                update.key, update.ready, update.not_ready, self._watch(revision)
            )
        elif isinstance(update, RevisionChanged):
            self.apply_revision(update.revision)
        elif isinstance(update, PodsRemoved):
            self.backends.drop(update.key)
            self.apply_backends(BackendsUpdate(update.key, frozenset()))
        elif isinstance(update, ClusterIPChanged):
            self.backends.set_cluster_ip(update.key, update.dest)
        elif isinstance(update, ActivatorsChanged):
            self._shares[update.key] = (update.count, update.index)
            throttler = self.handler.snapshot.throttlers.get(update.key)
            if throttler is not None:
                throttler.set_activators(*self._share(update.key))
        elif isinstance(update, RevisionRemoved):
            self.remove_revision(update.key)
        elif isinstance(update, NetworkChanged):
            self.mesh_mode, self.passthrough = update.mesh_mode, update.passthrough
            self.handler.passthrough = update.passthrough
        elif isinstance(update, IngressChanged):
            self.handler.snapshot.table.put_rules(update.key, update.rules)
        elif isinstance(update, IngressRemoved):
            self.handler.snapshot.table.remove_rules(update.key)
        elif isinstance(update, SourceHealth):
            if update.error != self.source_error:
                log.info("source %s", "ready" if update.error is None else update.error)
            self.source_error = update.error
        else:
            self.apply_config(update)

    def _share(self, key: RevisionKey) -> tuple[int, int]:
        """(activators, index) for a revision's throttler: its public Endpoints' count and
        our place among them, times ``--workers`` so that worker processes of one pod never
        over-commit the revision (each is one activator of ``count * workers``)."""
        workers = self.settings.workers
        count, index = self._shares.get(key, (1, 0))
        if index < 0:
            return count * workers, -1
        return count * workers, index * workers + self.index

    def _watch(self, revision: Revision | None) -> WatchOptions:
        passthrough = None
        if self.passthrough and revision is not None:
            passthrough = f"{private_service_name(revision.name)}.{revision.namespace}"
        return WatchOptions(
            probe_optimisation=revision.probe_optimisation if revision is not None else True,
            mesh_mode=self.mesh_mode,
            passthrough_host=passthrough,
        )

    def apply_revision(self, rev: Revision) -> None:
        """Add or change one revision in place (writer task only)."""
        snapshot = self.handler.snapshot
        throttlers = snapshot.throttlers
        assert isinstance(throttlers, dict)
        current = throttlers.get(rev.key)
        snapshot.table.put_revision(rev)
        if current is not None and current.cc == rev.container_concurrency:
            current.revision = rev
            return
        activators, index = self._share(rev.key)
        throttler = RevisionThrottler(rev, self._queue_depth(), activators, index, self._rng)
        healthy = self._healthy.get(rev.key)
        if healthy is not None:
            throttler.apply(healthy.dests, healthy.cluster_ip)
        throttlers[rev.key] = throttler
        if current is not None:
            current.retire()  # after publishing, so its waiters find the successor

    def remove_revision(self, key: RevisionKey) -> None:
        snapshot = self.handler.snapshot
        throttlers = snapshot.throttlers
        assert isinstance(throttlers, dict)
        snapshot.table.remove_revision(key)
        throttler = throttlers.pop(key, None)
        if throttler is not None:
            throttler.retire()
        self.backends.drop(key)
        self._healthy.pop(key, None)
        self._shares.pop(key, None)
        self.handler.cold_starts.forget(key)

    def _queue_depth(self) -> int:
        return self.config.queue_depth if self.config is not None else DEFAULT_QUEUE_DEPTH

    def apply_config(self, cfg: RoutingConfig) -> None:
        """Make ``cfg`` the routing state (writer task only)."""
        old = self.handler.snapshot.throttlers
        throttlers: dict[RevisionKey, RevisionThrottler] = {}
        retire: list[RevisionThrottler] = []
        for rev in cfg.revisions:
            current = old.get(rev.key)
            same = (
                current is not None
                and current.cc == rev.container_concurrency
                and current.queue_depth == cfg.queue_depth
            )
            if current is not None and same:
                current.revision = rev  # timeouts and labels may change in place
                throttlers[rev.key] = current
                continue
            throttler = RevisionThrottler(
                rev, cfg.queue_depth, self.activators, self.index, self._rng
            )
            healthy = self._healthy.get(rev.key)
            if healthy is not None:
                throttler.apply(healthy.dests, healthy.cluster_ip)
            throttlers[rev.key] = throttler
            if current is not None:
                retire.append(current)
        retire += [t for key, t in old.items() if key not in throttlers]
        self.handler.snapshot = Snapshot(
            RouteTable.build(cfg, self.settings.cluster_domain), throttlers
        )
        for throttler in retire:
            throttler.retire()  # after publishing, so its waiters find the successor
        for key in [k for k in self._healthy if k not in throttlers]:
            del self._healthy[key]
        self.handler.cold_starts.forget_all_but(throttlers)
        self.backends.set_endpoints({rev.key: frozenset(rev.endpoints) for rev in cfg.revisions})
        if self.webhook is not None and self.settings.scaler_url is None:
            self.webhook.url = cfg.scaler_url
        self.config = cfg

    def apply_backends(self, update: BackendsUpdate) -> None:
        """Give a revision's throttler its new healthy pods (writer task only).

        Kept even when the revision is not known yet: a cluster may list a revision's pods
        before the revision itself, and its throttler starts from them."""
        self._healthy[update.key] = update
        throttler = self.handler.snapshot.throttlers.get(update.key)
        if throttler is None:
            return
        if update.dests and not throttler.pods:
            # The first ready pods of an activation: the end of what Kubernetes does unseen.
            self.handler.cold_starts.mark(update.key, "endpoints")
        throttler.apply(update.dests, update.cluster_ip)
        log.info(
            "revision %s/%s: %d healthy pod(s)%s, capacity %d",
            update.key[0], update.key[1], len(update.dests),
            f" behind ClusterIP {update.cluster_ip}" if update.cluster_ip else "",
            throttler.capacity,
        )  # fmt: skip

    # ------------------------------------------------------------ side channels

    async def _report_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.report_interval
        while True:
            await asyncio.sleep(interval)
            batch = self.reporter.report(loop.time())
            if not batch:
                continue
            self.scaler.report(batch)
            table = self.handler.snapshot.table
            for ns, name, stat in batch:
                revision = table.lookup_revision(ns, name)
                if revision is not None:
                    self.metrics.set_concurrency(revision, stat.average_concurrent_requests)

    def _queue_depths(self) -> Iterable[tuple[Revision, int]]:
        for throttler in self.handler.snapshot.throttlers.values():
            yield throttler.revision, throttler.waiting

    async def _serve_metrics(self, ex: Exchange) -> None:
        path = ex.target.split(b"?", 1)[0]
        if ex.method not in (b"GET", b"HEAD") or path != b"/metrics":
            ex.send(404, b"404 page not found\n")
            return
        ex.send(200, self.metrics.render(), content_type=CONTENT_TYPE.encode())

    def __repr__(self) -> str:
        return (
            f"Activator({self.settings.pod_name!r}, worker={self.index}/{self.activators}, "
            f"revisions={len(self.handler.snapshot.throttlers)})"
        )
