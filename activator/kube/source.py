"""The Kubernetes source: Knative's objects as incremental updates for the activator.

What is watched (Knative v1.23.0's activator informers; the label selectors run server-side,
and nothing beyond Knative's ``knative-serving-activator`` ClusterRole and Role is needed):

* Revisions, cluster-wide → ``RevisionChanged`` / ``RevisionRemoved``;
* private Endpoints (``serviceType=Private`` with a ``revisionUID`` label) → ``PodsChanged``
  (ready and not-ready ``ip:port`` of the port named for the revision's protocol, ``http`` or
  ``http2``) / ``PodsRemoved``;
* public Endpoints (``serviceType=Public``) → ``ActivatorsChanged``: how many activators front
  the revision and our place among them (``POD_IP`` in the sorted ready IPs); an update that
  does not list us is ignored, as Knative's throttler does;
* private Services (``<rev>-private``, ``serviceType=Private``) → ``ClusterIPChanged``;
* with an ingress class (ingress mode, ``activator.kube.ingress``): Knative Ingresses of that
  class → ``IngressChanged`` / ``IngressRemoved``, and each new generation's status marked
  Ready through ``mark_ready`` once its rules are applied;
* ConfigMaps of ``SYSTEM_NAMESPACE`` → the log level (``loglevel.activator`` of
  ``CONFIG_LOGGING_NAME``); ``config-network`` and ``CONFIG_OBSERVABILITY_NAME`` changes are
  logged (Knative reads ``config-network`` once, at start-up).

Before any watch, the source runs Knative's start-up steps (``activator.kube.startup``):
``/version`` and ``config-network``, retried until they work, never given up on.

Each event touches one revision. An Endpoints or Service event that arrives before its
Revision is kept and replayed when the Revision arrives (its protocol names the port).

``SourceHealth`` values report readiness: not ready until every first list is done, and
whenever a watch cannot reach the API server; ready again when they recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from activator.capacity import infer_index
from activator.kube.client import (
    CONFIGMAPS,
    ENDPOINTS,
    REVISIONS,
    SERVICES,
    KubeError,
    Resource,
)
from activator.kube.ingress import INGRESSES, IngressInfo, decode_ingress, host_rules, ready_status
from activator.kube.objects import (
    PRIVATE_ENDPOINTS_SELECTOR,
    PUBLIC_ENDPOINTS_SELECTOR,
    SERVICE_TYPE_LABEL,
    SERVING_PORT_NAMES,
    ConfigMapInfo,
    EndpointsInfo,
    RevisionInfo,
    ServiceInfo,
    decode_configmap,
    decode_endpoints,
    decode_revision,
    decode_service,
    port_name_for,
    private_service_name,
)
from activator.kube.reflector import Backoff, Deleted, ListWatcher, Reflector, Upserted
from activator.kube.startup import start_up
from activator.kubeenv import KubeEnv
from activator.model import (
    ActivatorsChanged,
    ClusterIPChanged,
    IncrementalUpdate,
    IngressChanged,
    IngressRemoved,
    PodsChanged,
    PodsRemoved,
    Revision,
    RevisionChanged,
    RevisionKey,
    RevisionRemoved,
)
from activator.source import SourceHealth

__all__ = ["HEALTH_INTERVAL", "NOT_SYNCED", "ApiClient", "KubeSource", "to_revision"]

log = logging.getLogger("sluice.activator.kube")

#: Seconds between two looks at the watches' health.
HEALTH_INTERVAL = 0.5
NOT_SYNCED = "waiting for the first lists from the Kubernetes API"
PRIVATE_SERVICES_SELECTOR = f"{SERVICE_TYPE_LABEL}=Private"

_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

Update = IncrementalUpdate | SourceHealth


class ApiClient(ListWatcher, Protocol):
    """What the source needs of a client: list, watch and a plain GET."""

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]: ...

    async def patch_status(
        self, resource: Resource, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]: ...


def to_revision(info: RevisionInfo) -> Revision:
    """The activator's view of a Revision."""
    return Revision(
        name=info.name,
        namespace=info.namespace,
        container_concurrency=info.container_concurrency,
        timeout_seconds=info.timeout_seconds,
        response_start_timeout_seconds=info.response_start_timeout_seconds,
        idle_timeout_seconds=info.idle_timeout_seconds,
        service=info.service,
        configuration=info.configuration,
        protocol="h2c" if info.protocol == "h2c" else "http1",
        probe_optimisation=info.probe_optimisation,
        server_timing=info.server_timing,
    )


class KubeSource:
    """Follows a cluster through ``client`` and yields one update per relevant change."""

    def __init__(
        self,
        client: ApiClient,
        env: KubeEnv,
        *,
        api_url: str = "the Kubernetes API",
        backoff: Backoff | None = None,
        reflector_options: Mapping[str, Any] | None = None,
        health_interval: float = HEALTH_INTERVAL,
        set_log_level: Callable[[int], None] | None = None,
        ingress_class: str | None = None,
    ) -> None:
        self.env = env
        self._client = client
        #: The in-cluster name ingress statuses give as load balancer: the activator Service.
        self.load_balancer = f"activator-service.{env.system_namespace}.svc.{env.cluster_domain}"
        self._api_url = api_url
        self._backoff = backoff or Backoff(initial=1.0, maximum=30.0)
        self._status_tasks: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[Update] = asyncio.Queue()
        self._health_interval = health_interval
        self._set_log_level = set_log_level or logging.getLogger("sluice").setLevel
        self._revisions: dict[RevisionKey, RevisionInfo] = {}
        #: Latest Endpoints per revision, kept to re-derive updates when the Revision changes.
        self._private: dict[RevisionKey, EndpointsInfo] = {}
        self._public: dict[RevisionKey, EndpointsInfo] = {}
        #: Private Services by (namespace, service name), and which revision owns each name.
        self._services: dict[tuple[str, str], ServiceInfo] = {}
        self._owners: dict[tuple[str, str], RevisionKey] = {}
        self._sent_health: SourceHealth | None = None
        self._configmaps_seen: set[tuple[str, str]] = set()
        opts = dict(reflector_options or {})
        # Only the ports the activator sends to are kept: half the decoding, less memory.
        serving_endpoints = functools.partial(decode_endpoints, port_names=SERVING_PORT_NAMES)
        self.reflectors: list[Reflector[Any]] = [
            Reflector(client, REVISIONS, decode_revision, self._on_revision, **opts),
            Reflector(
                client,
                ENDPOINTS,
                serving_endpoints,
                self._on_private,
                label_selector=PRIVATE_ENDPOINTS_SELECTOR,
                **opts,
            ),
            Reflector(
                client,
                ENDPOINTS,
                serving_endpoints,
                self._on_public,
                label_selector=PUBLIC_ENDPOINTS_SELECTOR,
                **opts,
            ),
            Reflector(
                client,
                SERVICES,
                decode_service,
                self._on_service,
                label_selector=PRIVATE_SERVICES_SELECTOR,
                **opts,
            ),
            Reflector(
                client,
                CONFIGMAPS.in_namespace(env.system_namespace),
                decode_configmap,
                self._on_configmap,
                **opts,
            ),
        ]
        if ingress_class is not None:
            decode = functools.partial(decode_ingress, ingress_class=ingress_class)
            self.reflectors.append(Reflector(client, INGRESSES, decode, self._on_ingress, **opts))

    # ------------------------------------------------------------------ the stream

    async def updates(self) -> AsyncIterator[Update]:
        """Start up, run the watches and yield updates until the consumer stops iterating."""
        async for update in start_up(
            self._client, self._api_url, self.env.system_namespace, self._backoff
        ):
            if isinstance(update, SourceHealth):
                self._sent_health = update
            yield update
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(r.run(), name=f"watch {r.name}") for r in self.reflectors]
        tasks.append(loop.create_task(self._health_loop(), name="kube source health"))
        self._put(SourceHealth(NOT_SYNCED))
        try:
            while True:
                yield await self._queue.get()
        finally:
            tasks += self._status_tasks
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def health(self) -> SourceHealth:
        """Ready once every first list is done and while every watch reaches the server; the
        reason names the first failing watch and why (a 403 names the verb and resource)."""
        for reflector in self.reflectors:
            if reflector.failure is not None:
                return SourceHealth(f"watch of {reflector.name} failing: {reflector.failure}")
        for reflector in self.reflectors:
            if not reflector.synced.is_set():
                return SourceHealth(NOT_SYNCED)
        for reflector in self.reflectors:
            if not reflector.healthy:
                return SourceHealth(f"watch of {reflector.name} is failing; retrying")
        return SourceHealth(None)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            self._put(self.health())

    def _put(self, update: Update) -> None:
        if isinstance(update, SourceHealth):
            if update == self._sent_health:
                return
            self._sent_health = update
        self._queue.put_nowait(update)

    # ------------------------------------------------------------------ events

    def _on_revision(self, event: Upserted[RevisionInfo] | Deleted[RevisionInfo]) -> None:
        key = event.key
        if isinstance(event, Deleted):
            self._revisions.pop(key, None)
            self._owners.pop((key[0], private_service_name(key[1])), None)
            self._put(RevisionRemoved(key))
            return
        old = self._revisions.get(key)
        info = event.obj
        self._revisions[key] = info
        self._owners[(key[0], private_service_name(key[1]))] = key
        self._put(RevisionChanged(to_revision(info)))
        if old is None or old.protocol != info.protocol:
            # Pods, activators and the ClusterIP seen before the Revision (or under its old
            # protocol) are derived again now that the port name is known.
            private = self._private.get(key)
            if private is not None:
                self._put(self._pods(key, private))
            public = self._public.get(key)
            if public is not None:
                self._put_activators(key, public)
            self._put_cluster_ip(key)

    def _port_name(self, key: RevisionKey) -> str:
        info = self._revisions.get(key)
        return port_name_for(info.protocol if info is not None else "http1")

    def _pods(self, key: RevisionKey, endpoints: EndpointsInfo) -> PodsChanged:
        ready, not_ready = endpoints.dests(self._port_name(key))
        return PodsChanged(key, ready, not_ready)

    @staticmethod
    def _revision_key(endpoints: EndpointsInfo) -> RevisionKey | None:
        if not endpoints.revision:
            log.warning(
                "skipping Endpoints %s/%s: no serving.knative.dev/revision label",
                endpoints.namespace,
                endpoints.name,
            )
            return None
        return (endpoints.namespace, endpoints.revision)

    def _on_private(self, event: Upserted[EndpointsInfo] | Deleted[EndpointsInfo]) -> None:
        key = self._revision_key(event.obj)
        if key is None:
            return
        if isinstance(event, Deleted):
            self._private.pop(key, None)
            self._put(PodsRemoved(key))
            return
        self._private[key] = event.obj
        self._put(self._pods(key, event.obj))

    def _on_public(self, event: Upserted[EndpointsInfo] | Deleted[EndpointsInfo]) -> None:
        key = self._revision_key(event.obj)
        if key is None:
            return
        if isinstance(event, Deleted):
            self._public.pop(key, None)
            return
        self._public[key] = event.obj
        self._put_activators(key, event.obj)

    def _put_activators(self, key: RevisionKey, endpoints: EndpointsInfo) -> None:
        ips = sorted(endpoints.ready_ips(self._port_name(key)))
        index = infer_index(ips, self.env.pod_ip)
        if index < 0:
            return  # we are not among this revision's activators: keep what we had
        self._put(ActivatorsChanged(key, len(ips), index))

    def _on_service(self, event: Upserted[ServiceInfo] | Deleted[ServiceInfo]) -> None:
        svc = event.obj
        if isinstance(event, Deleted):
            self._services.pop(svc.key, None)
        else:
            self._services[svc.key] = svc
        owner = self._owners.get(svc.key)
        if owner is not None:
            self._put_cluster_ip(owner)

    def _put_cluster_ip(self, key: RevisionKey) -> None:
        svc = self._services.get((key[0], private_service_name(key[1])))
        dest = svc.dest(self._port_name(key)) if svc is not None else None
        self._put(ClusterIPChanged(key, dest))

    def _on_ingress(self, event: Upserted[IngressInfo] | Deleted[IngressInfo]) -> None:
        info = event.obj
        if isinstance(event, Deleted):
            self._put(IngressRemoved(info.key))
            return
        self._put(IngressChanged(info.key, host_rules(info)))
        if not info.ready:
            # Written after the rules are queued; the writer applies them first.
            task = asyncio.get_running_loop().create_task(self._mark_ready(info))
            self._status_tasks.add(task)
            task.add_done_callback(self._status_tasks.discard)

    async def _mark_ready(self, info: IngressInfo) -> None:
        """Tell the route controller this generation's rules are served (a few tries; a
        later change of the Ingress, or a relist, tries again)."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        for attempt in range(5):
            try:
                await self._client.patch_status(
                    INGRESSES.in_namespace(info.namespace),
                    info.name,
                    ready_status(info, self.load_balancer),
                )
                return
            except KubeError as exc:
                if attempt == 0:
                    log.warning("marking Ingress %s/%s ready: %s", info.namespace, info.name, exc)
            await asyncio.sleep(backoff.delay())

    def _on_configmap(self, event: Upserted[ConfigMapInfo] | Deleted[ConfigMapInfo]) -> None:
        if isinstance(event, Deleted):
            return
        cm = event.obj
        if cm.name == self.env.config_logging_name:
            raw = cm.data.get("loglevel.activator", "").strip().lower()
            level = _LOG_LEVELS.get(raw)
            if raw and level is None:
                log.warning("%s: loglevel.activator: unknown level %r, ignored", cm.name, raw)
            elif level is not None:
                self._set_log_level(level)
        elif cm.name in (self.env.config_observability_name, "config-network"):
            if cm.key in self._configmaps_seen:
                log.info("ConfigMap %s/%s changed (read at start-up only)", cm.namespace, cm.name)
            self._configmaps_seen.add(cm.key)

    def __repr__(self) -> str:
        return (
            f"KubeSource(revisions={len(self._revisions)}, private={len(self._private)}, "
            f"public={len(self._public)}, services={len(self._services)})"
        )
