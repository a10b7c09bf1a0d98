"""The embedded control plane: desired state in, pods and routing configuration out.

Theory of operation. ``ControlPlane`` is the single writer of the cluster state (services,
revision history, routes) and of the per-revision runtimes (pods, autoscalers). Everything
runs on one event loop: API calls (``apply``, ``delete``), the activator's stats
(``handle_stats``), the 1 s scrape and the 2 s decision tick change state synchronously and
then set ``_dirty``; one reconcile task wakes on it, starts and stops pods to match each
revision's desired scale, marks revisions ready when a pod first becomes ready (which
re-resolves routes), saves the state and publishes a new ``RoutingConfig`` to the activator
when it changed. Pods report their own phase changes through ``_dirty`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from activator.coldstart import ColdStarts
from activator.model import RevisionKey, RoutingConfig
from proxy.dataplane.autoscaler_stat_pb import Stat, decode_stat
from proxy.dataplane.prober import ProbeError, probe_http
from serving.autoscaler import RevisionAutoscaler
from serving.autoscaling_config import RevisionScalingSpec
from serving.containers import owner_id
from serving.envsources import EnvSource, resolve_env_from
from serving.failures import progress_deadline
from serving.manifest import ServiceManifest
from serving.pods import LocalPod, allocate_ports
from serving.podspec import POD_IP, PodPlanError, build_pod_plan, pod_name
from serving.revisions import RevisionRecord, build_revision
from serving.runtime import RevisionRuntime, scale_plan
from serving.settings import UpSettings
from serving.state import (
    ApplyResult,
    ClusterState,
    ServiceKey,
    StateStore,
    all_revisions,
    apply_manifests,
    delete_service,
    mark_ready,
    routed_revisions,
    routes,
)

log = logging.getLogger("sluice.serving")
MAX_EVENTS = 1000
STATS_HEADERS = (("Accept", "application/protobuf"),)
STATS_TIMEOUT = 0.8


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    type: str
    reason: str
    object: str
    message: str
    namespace: str = ""
    service: str = ""


class ControlPlane:
    def __init__(
        self,
        settings: UpSettings,
        store: StateStore,
        publish: Callable[[RoutingConfig], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publish = publish
        self.clock = clock
        self.state = ClusterState()
        self.runtimes: dict[RevisionKey, RevisionRuntime] = {}
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self.on_event: Callable[[Event], None] = lambda e: None
        #: Requests the activator holds per revision (set by whoever embeds the activator).
        self.queue_depths: Callable[[], Mapping[RevisionKey, int]] = dict
        #: Where cold starts' milestones go and their breakdowns are kept: the embedded
        #: activator's (``activator.coldstart``), set by whoever embeds it.
        self.cold_starts = ColdStarts()
        self._dirty = asyncio.Event()
        self._published: RoutingConfig | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stops: set[asyncio.Task[None]] = set()
        self._base_env = dict(os.environ)

    # --- desired state ------------------------------------------------------------------

    def restore(self) -> ClusterState:
        """Load the saved state; routed and latest revisions start at their initial scale."""
        self.state = self.store.load()
        routed = routed_revisions(self.state)
        for svc, rec in all_revisions(self.state):
            wanted = (svc.key[0], rec.name) in routed or rec.name == svc.latest_created_name()
            self._ensure_runtime(svc.manifest, rec, fresh=wanted)
        self._dirty.set()
        return self.state

    def apply(
        self, items: Sequence[tuple[ServiceManifest, str]], sources: Sequence[EnvSource] = ()
    ) -> ApplyResult:
        """Apply ``(manifest, workdir)`` pairs and ConfigMaps/Secrets all or nothing
        (``ManifestError``); new revisions start at once."""
        result = apply_manifests(self.state, items, sources)
        self.state = result.state
        self.store.save(self.state)
        for key, name in result.created_revisions:
            svc = self.state.services[key]
            rec = svc.revision(name)
            assert rec is not None
            self._ensure_runtime(svc.manifest, rec, fresh=True)
            self.event("Normal", "Created", f"revision/{name}", "revision created", svc.key)
        for message in result.messages:
            log.info("%s", message)
        self._dirty.set()
        return result

    def delete(self, key: ServiceKey) -> None:
        """Delete a service (``KeyError`` if unknown); its pods are drained and stopped."""
        self.state = delete_service(self.state, key)
        self.store.save(self.state)
        self.event("Normal", "Deleted", f"service/{key[1]}", "service deleted", key)
        self._dirty.set()

    def _ensure_runtime(
        self, manifest: ServiceManifest, rec: RevisionRecord, *, fresh: bool
    ) -> RevisionRuntime:
        key = (manifest.namespace, rec.name)
        if key in self.runtimes:
            return self.runtimes[key]
        t = rec.template
        spec = RevisionScalingSpec.from_annotations(
            t.annotations, t.container_concurrency, self.settings.autoscaler
        )
        # A revision created with initial scale 0 (allow-zero-initial-scale) is Ready at once.
        zero_initial_scale = fresh and spec.initial_scale == 0
        if not fresh:
            spec = replace(spec, initial_scale=0)
        scaler = RevisionAutoscaler(spec, self.clock(), spec.initial_scale)
        runtime = RevisionRuntime(key, manifest.name, scaler)
        runtime.zero_initial_scale = zero_initial_scale
        runtime.created_at = self.clock()
        # Validated when the manifest was applied; a bad value in an old state file falls back.
        with contextlib.suppress(ValueError):
            runtime.progress_deadline = progress_deadline(t.annotations)
        self.runtimes[key] = runtime
        return runtime

    def event(self, kind: str, reason: str, obj: str, message: str, key: ServiceKey) -> None:
        ev = Event(time.time(), kind, reason, obj, message, key[0], key[1])
        self.events.append(ev)
        self.on_event(ev)

    # --- the activator's stats (embedded scaler) -----------------------------------------

    def handle_stats(self, batch: Sequence[tuple[str, str, Stat]]) -> None:
        now = self.clock()
        for namespace, revision, stat in batch:
            runtime = self.runtimes.get((namespace, revision))
            if runtime is None or runtime.retired:
                continue
            desired = runtime.autoscaler.poke(now, stat, len(runtime.ready_pods))
            if desired is not None:
                self.cold_starts.mark((namespace, revision), "decided")
                self.event(
                    "Normal",
                    "Activating",
                    f"revision/{revision}",
                    f"request while at zero: scaling to {desired}",
                    (namespace, runtime.service),
                )
                self._dirty.set()

    # --- loops --------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._scrape_loop(), name="scrape"),
            asyncio.create_task(self._decide_loop(), name="decide"),
        ]

    async def stop(self) -> None:
        """Stop the loops, then drain and stop every pod (concurrently)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pods = [p for r in self.runtimes.values() for p in r.pods]
        await asyncio.gather(*(p.stop() for p in pods), *self._stops, return_exceptions=True)

    async def _reconcile_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                self.reconcile()
            except Exception:  # a bug here must not stop the control plane
                log.exception("reconcile failed")
            await asyncio.sleep(0)

    async def _decide_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.decide_interval)
            now = self.clock()
            routed = routed_revisions(self.state)
            for key, rt in self.runtimes.items():
                if rt.retired:
                    continue
                self._report_deadline(rt, now)
                before = rt.autoscaler.desired
                after = rt.autoscaler.tick(
                    now, len(rt.ready_pods), len(rt.live_pods), key in routed
                )
                if after != before:
                    self.event(
                        "Normal",
                        "ScaleChanged",
                        f"revision/{key[1]}",
                        f"desired scale {before} -> {after}",
                        (key[0], rt.service),
                    )
                    self._dirty.set()

    def _report_deadline(self, rt: RevisionRuntime, now: float) -> None:
        """One event when a revision that never became ready passes its progress deadline."""
        svc = self.state.services.get((rt.key[0], rt.service))
        rec = svc.revision(rt.key[1]) if svc else None
        if rt.deadline_reported or rec is None or rec.ready:
            return
        failure = rt.failed(now)
        if failure is not None and failure.reason == "ProgressDeadlineExceeded":
            rt.deadline_reported = True
            self.event("Warning", failure.reason, f"revision/{rt.key[1]}", failure.message,
                       (rt.key[0], rt.service))  # fmt: skip

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.scrape_interval)
            runtimes = [r for r in self.runtimes.values() if not r.retired]
            results = await asyncio.gather(*(self._scrape(r) for r in runtimes))
            now = self.clock()
            for runtime, stats in zip(runtimes, results, strict=True):
                runtime.autoscaler.observe(now, stats)

    async def _scrape(self, runtime: RevisionRuntime) -> list[Stat]:
        async def one(pod: LocalPod) -> Stat | None:
            try:
                res = await probe_http(
                    POD_IP, pod.plan.ports.stats, "/metrics", STATS_HEADERS, STATS_TIMEOUT
                )
                return decode_stat(res.body) if res.status == 200 else None
            except (ProbeError, ValueError):
                return None

        found = await asyncio.gather(*(one(p) for p in runtime.ready_pods))
        return [s for s in found if s is not None]

    # --- reconcile (decide, then start/stop) -----------------------------------------------

    def reconcile(self) -> None:
        self._retire_orphans()
        for runtime in list(self.runtimes.values()):
            self._scale(runtime)
            runtime.pods = [p for p in runtime.pods if p.phase.value != "Stopped"]
            if runtime.retired and not runtime.pods:
                del self.runtimes[runtime.key]
        self._mark_ready()
        self._publish()

    def _retire_orphans(self) -> None:
        for key, runtime in self.runtimes.items():
            svc = self.state.services.get((key[0], runtime.service))
            if not runtime.retired and (svc is None or svc.revision(key[1]) is None):
                runtime.retired = True
                runtime.autoscaler.desired = 0

    def _scale(self, runtime: RevisionRuntime) -> None:
        plan = scale_plan(runtime.pods, runtime.autoscaler.desired)
        for pod in plan.stop:
            self.event("Normal", "Killing", f"pod/{pod.name}", "draining: scale down",
                       (runtime.key[0], runtime.service))  # fmt: skip
            task = asyncio.create_task(pod.stop(), name=f"stop {pod.name}")
            self._stops.add(task)
            task.add_done_callback(self._stopped)
        for _ in range(plan.start):
            new = self._new_pod(runtime)
            if new is None:
                break
            runtime.pods.append(new)
            new.start()

    def _stopped(self, task: asyncio.Task[None]) -> None:
        self._stops.discard(task)
        self._dirty.set()

    def _new_pod(self, runtime: RevisionRuntime) -> LocalPod | None:
        namespace, revision = runtime.key
        svc = self.state.services[(namespace, runtime.service)]
        rec = svc.revision(revision)
        assert rec is not None
        name = pod_name(revision, runtime.next_index())
        try:
            try:
                container = rec.template.container
                env_from, skipped = resolve_env_from(container, namespace, self.state.sources)
            except KeyError as exc:  # applied objects are never deleted; kept for safety
                raise PodPlanError(str(exc.args[0])) from None
            if skipped and runtime.started == 1:
                self.event("Warning", "InvalidEnvironmentVariableNames", f"revision/{revision}",
                           f"keys skipped from envFrom: {', '.join(skipped)}", svc.key)  # fmt: skip
            plan = build_pod_plan(
                rec.template,
                namespace=namespace,
                service=svc.manifest.name,
                revision=revision,
                pod=name,
                ports=allocate_ports(),
                workdir=svc.workdirs.get(revision, os.getcwd()),
                base_env=self._base_env,
                queue_proxy_argv=self.settings.queue_proxy_argv,
                drain_quiet_seconds=self.settings.drain_quiet_seconds,
                env_from=env_from,
                owner=owner_id(self.settings.state_dir),
            )
        except PodPlanError as exc:
            if runtime.failure != str(exc):
                runtime.failure = str(exc)
                self.event("Warning", "NotRunnable", f"revision/{revision}", str(exc), svc.key)
            return None
        key = runtime.key

        def changed(pod: LocalPod) -> None:
            if pod.ready:
                self.cold_starts.mark(key, "ready")
            self._dirty.set()

        def event(pod: LocalPod, kind: str, reason: str, msg: str) -> None:
            if reason == "Started":
                self.cold_starts.mark(key, "started")
            self.event(kind, reason, f"pod/{pod.name}", msg, svc.key)

        return LocalPod(
            plan,
            self.settings.revision_log_dir(namespace, revision),
            on_change=changed,
            on_event=event,
        )

    def _mark_ready(self) -> None:
        state = self.state
        for key, runtime in self.runtimes.items():
            # Knative counts a scale target as initialised once ready pods reach the initial
            # scale: with allow-zero-initial-scale and initial-scale 0 that is at once, so
            # such a revision is Ready with no pods and its first request scales it up.
            zero_start = runtime.zero_initial_scale and not runtime.failure
            if (runtime.ready_pods or zero_start) and not runtime.retired:
                svc_key = (key[0], runtime.service)
                before = state
                state = mark_ready(state, svc_key, key[1])
                if state is not before:
                    self.event("Normal", "RevisionReady", f"revision/{key[1]}", "ready", svc_key)
        if state is not self.state:
            self.state = state
            self.store.save(state)

    def routing_config(self) -> RoutingConfig:
        revisions = []
        for svc, rec in all_revisions(self.state):
            runtime = self.runtimes.get((svc.key[0], rec.name))
            endpoints = runtime.endpoints if runtime else ()
            revisions.append(build_revision(rec, svc.manifest, endpoints))
        return RoutingConfig(
            domain=self.settings.domain,
            tag_header_routing=True,
            routes=routes(self.state),
            revisions=tuple(revisions),
        )

    def publish_routing(self) -> None:
        """Publish the routing configuration if it changed since the last publication."""
        self._publish()

    def _publish(self) -> None:
        cfg = self.routing_config()
        if cfg != self._published:
            self._published = cfg
            self.publish(cfg)
