"""Assembly of the activator in Kubernetes mode.

``build_activator`` authenticates (the pod's service account, its token re-read as it
rotates, and the cluster CA; or ``--kubeconfig`` for development), then builds the
``KubeSource``, the Knative scaler (the autoscaler's websocket) and the ``Activator`` whose
readiness follows both. Nothing here waits for the API server: the source does that after the
servers are up, so kubelet probes get a "not ready" answer naming what is missing instead of
a refused connection, and an unreachable API server never ends the process.

A bad kubeconfig or missing service-account files are a ``StartupError`` with one line;
``main`` prints it and exits 1.
"""

from __future__ import annotations

import logging

from activator.app import Activator, Settings
from activator.knative_scaler import NOT_CONNECTED, KnativeScaler, autoscaler_url
from activator.kube.client import KubeClient
from activator.kube.config import KubeConfig, KubeConfigError
from activator.kube.source import KubeSource
from activator.kubeenv import KubeEnv

__all__ = ["StartupError", "build_activator", "kube_config"]

log = logging.getLogger("sluice.activator")


class StartupError(Exception):
    """The activator cannot start; the message is one line."""


def kube_config(settings: Settings) -> KubeConfig:
    try:
        if settings.kubeconfig:
            return KubeConfig.from_kubeconfig(settings.kubeconfig)
        return KubeConfig.in_cluster()
    except KubeConfigError as exc:
        raise StartupError(str(exc)) from None


def build_activator(settings: Settings, env: KubeEnv) -> Activator:
    """The activator of Kubernetes mode, built but not started."""
    config = kube_config(settings)
    client = KubeClient(config)
    url = settings.autoscaler_url or autoscaler_url(env.system_namespace, env.cluster_domain)
    log.info("Kubernetes API at %s; autoscaler at %s", config.server, url)
    scaler = KnativeScaler(url)
    source = KubeSource(client, env, api_url=config.server, ingress_class=settings.ingress_class)

    def scaler_ready() -> str | None:
        return None if scaler.connected else NOT_CONNECTED

    activator = Activator(settings, source, scaler=scaler, readiness=[scaler_ready])
    activator.closers += [client.close, scaler.close]
    activator.metrics.watch_scaler(
        lambda: scaler.dropped, lambda: scaler.reachable, lambda: scaler.errors
    )
    scaler.start()
    return activator
