"""Learning which pods of a revision may take traffic: probe before use (reference §2.6).

A pod (a queue-proxy ``host:port``) listed by the source is *unproven* until it answers
``GET /healthz`` with ``K-Network-Probe: queue`` and ``User-Agent: Knative-Activator-Probe`` by
``200`` and the body ``queue`` exactly. Then it is *healthy* and stays so while the source
lists it. One ``RevisionWatcher`` per revision probes all its unproven pods in parallel under
one deadline (``PROBE_TIMEOUT``), round after round every ``PROBE_FREQUENCY`` while any is
unproven, with no backoff (Knative's activator does the same).

Sources list pods as Kubernetes sees them: *ready* and *not ready* addresses. The rules
(``RevisionWatcher.step``, Knative's ``checkDests``):

* a pod that moved from ready to not ready loses its healthy mark and is probed again;
* a passed probe counts for a not-ready pod only with the *probe optimisation* on (the
  default: a pod takes traffic as soon as its queue-proxy says so, before Kubernetes marks it
  Ready); it is off for revisions whose readiness probe is ``exec`` or that have a startup
  probe, whose pods then wait for Kubernetes;
* ``mesh_mode`` (``config-network`` ``mesh-compatibility-mode``): ``auto`` probes pods and falls
  back to the private Service's ClusterIP when every probe got a 502/503 (a mesh answering for
  the pod); ``enabled`` always uses the ClusterIP; ``disabled`` never does. With a mode other
  than ``auto``, Kubernetes-ready pods are trusted without a probe;
* ``passthrough`` (``enable-mesh-pod-addressability``): probes carry
  ``Host: <rev>-private.<ns>`` and ``K-Passthrough-Lb: true``, and there is no ClusterIP
  fallback.

Watchers never touch the throttler: each change is emitted as a frozen ``BackendsUpdate``
through ``emit`` (the activator's update queue), so the throttler keeps a single writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from activator.model import MeshMode, RevisionKey
from proxy.dataplane.prober import ProbeError, probe_http

__all__ = [
    "PROBE_HEADERS",
    "PROBE_INTERVAL",
    "PROBE_TIMEOUT",
    "Backends",
    "BackendsUpdate",
    "MeshMode",
    "ProbeOutcome",
    "RevisionWatcher",
    "WatchOptions",
    "check_dests",
    "probe_queue",
    "split_dest",
]

log = logging.getLogger("sluice.activator.backends")

#: Seconds between probe rounds while some pod is unproven (Knative ``PROBE_FREQUENCY``).
PROBE_INTERVAL = 0.2
#: Deadline of one probe round (Knative ``PROBE_TIMEOUT``).
PROBE_TIMEOUT = 0.3
PROBE_HEADERS: tuple[tuple[str, str], ...] = (
    ("K-Network-Probe", "queue"),
    ("User-Agent", "Knative-Activator-Probe"),
)


class ProbeOutcome(enum.IntEnum):
    """A probe's result. ``FAIL``/``OK`` equal ``False``/``True``, so a plain bool will do."""

    FAIL = 0
    OK = 1
    #: 502 or 503: perhaps a mesh proxy answered instead of the pod (ClusterIP fallback).
    MESH = 2


#: ``probe(dest, timeout)``: one probe of a queue-proxy (or the ClusterIP).
Prober = Callable[[str, float], Awaitable[bool | ProbeOutcome]]


@dataclass(frozen=True, slots=True)
class BackendsUpdate:
    """Where one revision's requests may go right now.

    ``dests`` are the healthy pods; with ``cluster_ip`` set, requests go to that single
    destination instead (kube-proxy balances behind it) and ``dests`` are the pods
    Kubernetes calls ready, which size the capacity.
    """

    key: RevisionKey
    dests: frozenset[str]
    cluster_ip: str | None = None


def split_dest(dest: str) -> tuple[str, int]:
    """``"10.0.0.1:8012"`` → ``("10.0.0.1", 8012)``; ``"[::1]:8012"`` → ``("::1", 8012)``."""
    host, _, port = dest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


async def probe_queue(
    dest: str, timeout: float, extra_headers: tuple[tuple[str, str], ...] = ()
) -> ProbeOutcome:
    """One activator probe of a queue-proxy: ``OK`` iff it answered 200 ``queue``."""
    host, port = split_dest(dest)
    try:
        resp = await probe_http(host, port, "/healthz", PROBE_HEADERS + extra_headers, timeout)
    except ProbeError as exc:
        log.debug("probe of %s failed: %s", dest, exc)
        return ProbeOutcome.FAIL
    if resp.status == 200 and resp.body == b"queue":
        return ProbeOutcome.OK
    return ProbeOutcome.MESH if resp.status in (502, 503) else ProbeOutcome.FAIL


def check_dests(
    endpoints: frozenset[str], healthy: frozenset[str], passed: Iterable[str]
) -> frozenset[str]:
    """The new healthy set: previously healthy pods still listed, plus those that passed."""
    return (healthy & endpoints) | (frozenset(passed) & endpoints)


class RevisionWatcher:
    """Probes one revision's pods and emits where its requests may go on every change."""

    def __init__(
        self,
        key: RevisionKey,
        emit: Callable[[BackendsUpdate], None],
        probe: Prober = probe_queue,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
        *,
        probe_optimisation: bool = True,
        mesh_mode: MeshMode = MeshMode.AUTO,
        passthrough: bool = False,
    ) -> None:
        self.key = key
        self.ready: frozenset[str] = frozenset()
        self.not_ready: frozenset[str] = frozenset()
        self.healthy: frozenset[str] = frozenset()
        self.probe_optimisation = probe_optimisation
        self.mesh_mode = mesh_mode
        self.passthrough = passthrough
        #: The private Service's ``ip:port``, for the ClusterIP fallback.
        self.cluster_ip: str | None = None
        self.cluster_ip_healthy = False
        #: False once the ClusterIP was chosen because pods could not be reached directly.
        self.pods_addressable = True
        self._emit = emit
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        self._sent: BackendsUpdate | None = None
        self._changed = asyncio.Event()

    @property
    def endpoints(self) -> frozenset[str]:
        """Every listed pod, ready or not."""
        return self.ready | self.not_ready

    def set_endpoints(self, endpoints: frozenset[str]) -> None:
        """List ``endpoints`` as ready pods (sources that know no readiness)."""
        self.set_pods(endpoints, frozenset())

    def set_pods(self, ready: frozenset[str], not_ready: frozenset[str]) -> None:
        """The pods as Kubernetes lists them now."""
        not_ready = not_ready - ready
        if ready == self.ready and not_ready == self.not_ready:
            return
        # A pod that Kubernetes stopped calling ready must prove itself again.
        self.healthy -= self.ready & not_ready
        self.ready, self.not_ready = ready, not_ready
        self._changed.set()

    def set_cluster_ip(self, dest: str | None) -> None:
        if dest != self.cluster_ip:
            self.cluster_ip = dest
            self.cluster_ip_healthy = False
            self._changed.set()

    async def _probe_round(self, dests: Iterable[str]) -> dict[str, ProbeOutcome]:
        async def one(dest: str) -> ProbeOutcome:
            try:
                return ProbeOutcome(int(await self._probe(dest, self._timeout)))
            except (OSError, ValueError) as exc:
                log.debug("probe of %s failed: %s", dest, exc)
                return ProbeOutcome.FAIL

        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(one(d)): d for d in sorted(dests)}
        if not tasks:
            return {}
        try:
            # One deadline for the round; a probe still running then counts as failed.
            done, _ = await asyncio.wait(tasks, timeout=self._timeout)
        finally:
            for task in tasks:
                task.cancel()
        results = dict.fromkeys(tasks.values(), ProbeOutcome.FAIL)
        for task in done:
            if not task.cancelled() and task.exception() is None:
                results[tasks[task]] = task.result()
        return results

    def _to_probe(self) -> frozenset[str]:
        """The pods a round would probe now (empty when nothing is left to learn)."""
        if not self.pods_addressable or self.mesh_mode is MeshMode.ENABLED:
            return frozenset()
        unproven = self.endpoints - self.healthy
        if self.mesh_mode is not MeshMode.AUTO:
            unproven -= self.ready  # trusted without a probe
        return unproven

    def step(self, results: Mapping[str, bool | ProbeOutcome] | Iterable[str]) -> bool:
        """Fold one round's results in and emit if something changed.

        ``results`` maps each probed pod to its outcome (an iterable of names means "these
        passed"). Returns True when the ClusterIP should be tried next (every pod failed as
        if a mesh answered for it).
        """
        if not isinstance(results, Mapping):
            results = dict.fromkeys(results, ProbeOutcome.OK)
        endpoints = self.endpoints
        if not endpoints:
            self.healthy = frozenset()
            self._send(BackendsUpdate(self.key, frozenset()))
            return False
        if self.pods_addressable and self.mesh_mode is not MeshMode.ENABLED:
            trusted = self.ready if self.mesh_mode is not MeshMode.AUTO else frozenset()
            passed = {
                d
                for d, outcome in results.items()
                if outcome == ProbeOutcome.OK and (d in self.ready or self.probe_optimisation)
            }
            before = self.healthy
            self.healthy = check_dests(endpoints, before | trusted, passed)
            if self.healthy or self.healthy != before:
                self._send(BackendsUpdate(self.key, self.healthy))
                return False
            if any(outcome == ProbeOutcome.FAIL for outcome in results.values()):
                return False  # a pod that is merely not up yet: wait for the next round
            if not results:
                return False
        if self.passthrough or self.mesh_mode is MeshMode.DISABLED:
            return False
        return self.cluster_ip is not None

    def use_cluster_ip(self) -> None:
        """The ClusterIP answered: send requests there from now on (pods unreachable)."""
        assert self.cluster_ip is not None
        self.pods_addressable = False
        self.cluster_ip_healthy = True
        self._send(BackendsUpdate(self.key, self.ready, self.cluster_ip))

    def _send(self, update: BackendsUpdate) -> None:
        if update == self._sent or (self._sent is None and not update.dests):
            return
        self._sent = update
        self._emit(update)

    def _busy(self) -> bool:
        """Whether a timer should run another round without waiting for a change."""
        if self.cluster_ip_healthy or not self.endpoints:
            return False
        return bool(self._to_probe()) or (
            self.mesh_mode is MeshMode.ENABLED and self.cluster_ip is not None
        )

    async def run(self) -> None:
        while True:
            self._changed.clear()
            if self.cluster_ip_healthy:
                # Kubernetes' ready count sizes the capacity behind the ClusterIP.
                self._send(BackendsUpdate(self.key, self.ready, self.cluster_ip))
            else:
                results = await self._probe_round(self._to_probe())
                if self.step(results) and self.cluster_ip is not None:
                    outcome = await self._probe_round([self.cluster_ip])
                    if outcome.get(self.cluster_ip) == ProbeOutcome.OK:
                        self.use_cluster_ip()
            if self._busy():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._changed.wait()
            else:
                await self._changed.wait()

    def __repr__(self) -> str:
        return (
            f"RevisionWatcher({self.key[0]}/{self.key[1]}, ready={len(self.ready)}, "
            f"not_ready={len(self.not_ready)}, healthy={len(self.healthy)}"
            f"{', cluster_ip' if self.cluster_ip_healthy else ''})"
        )


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """How one revision's pods are probed (from the Revision and ``config-network``)."""

    probe_optimisation: bool = True
    mesh_mode: MeshMode = MeshMode.AUTO
    #: ``Host`` for passthrough probes (``<rev>-private.<ns>``); None when off.
    passthrough_host: str | None = None


class Backends:
    """One watcher task per revision, kept in line with the source's pod lists."""

    def __init__(
        self,
        emit: Callable[[BackendsUpdate], None],
        probe: Prober = probe_queue,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._emit = emit
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        self._watchers: dict[RevisionKey, tuple[RevisionWatcher, asyncio.Task[None]]] = {}

    def _watcher(self, key: RevisionKey, options: WatchOptions | None = None) -> RevisionWatcher:
        entry = self._watchers.get(key)
        if entry is not None:
            return entry[0]
        opts = options or WatchOptions()
        probe = self._probe
        if opts.passthrough_host is not None and probe is probe_queue:
            headers = (("Host", opts.passthrough_host), ("K-Passthrough-Lb", "true"))

            async def probe(dest: str, timeout: float) -> ProbeOutcome:
                return await probe_queue(dest, timeout, headers)

        watcher = RevisionWatcher(
            key,
            self._emit,
            probe,
            self._interval,
            self._timeout,
            probe_optimisation=opts.probe_optimisation,
            mesh_mode=opts.mesh_mode,
            passthrough=opts.passthrough_host is not None,
        )
        task = asyncio.get_running_loop().create_task(
            watcher.run(), name=f"watch {key[0]}/{key[1]}"
        )
        self._watchers[key] = (watcher, task)
        return watcher

    def set_endpoints(self, endpoints: Mapping[RevisionKey, frozenset[str]]) -> None:
        """Start, update or stop watchers so that exactly ``endpoints``' revisions are
        watched, every listed pod counting as ready (static and embedded sources)."""
        for key in [k for k in self._watchers if k not in endpoints]:
            self.drop(key)
        for key, eps in endpoints.items():
            self._watcher(key).set_pods(eps, frozenset())

    def set_pods(
        self,
        key: RevisionKey,
        ready: frozenset[str],
        not_ready: frozenset[str],
        options: WatchOptions | None = None,
    ) -> None:
        """One revision's pods changed (one Endpoints event): only its watcher is touched."""
        watcher = self._watcher(key, options)
        if options is not None:
            watcher.probe_optimisation = options.probe_optimisation
        watcher.set_pods(ready, not_ready)

    def set_cluster_ip(self, key: RevisionKey, dest: str | None) -> None:
        entry = self._watchers.get(key)
        if entry is not None:
            entry[0].set_cluster_ip(dest)

    def drop(self, key: RevisionKey) -> None:
        """Stop watching one revision (its Endpoints or the Revision were deleted)."""
        entry = self._watchers.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    def watched(self, key: RevisionKey) -> bool:
        return key in self._watchers

    def healthy(self, key: RevisionKey) -> frozenset[str]:
        entry = self._watchers.get(key)
        return entry[0].healthy if entry is not None else frozenset()

    async def close(self) -> None:
        tasks = [task for _, task in self._watchers.values()]
        self._watchers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __repr__(self) -> str:
        return f"Backends(revisions={len(self._watchers)})"
