"""Knative's activator start-up steps, done after the servers are up and never given up on.

Knative's activator polls the API server's ``/version`` for 60 s and exits, then reads
``config-network`` once and exits if it is missing. Sluice's does both in ``start_up``, an
async generator the Kubernetes source runs before its watches: each step is retried with
back-off until it works, the activator meanwhile not ready with the reason as its health
(``SourceHealth``), and one log line per new reason (the first names the API server's URL).
It ends by yielding ``config-network`` as a ``NetworkChanged``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from activator.kube.client import ApiError, KubeError
from activator.kube.reflector import Backoff
from activator.model import MeshMode, NetworkChanged
from activator.source import SourceHealth

__all__ = ["CONFIG_NETWORK", "Getter", "NetworkError", "network_settings", "start_up"]

log = logging.getLogger("sluice.activator.kube")

CONFIG_NETWORK = "config-network"
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"", "0", "f", "false"})


class Getter(Protocol):
    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]: ...


class NetworkError(ValueError):
    """``config-network`` holds a value the activator cannot use; one line naming the key."""


def network_settings(data: Mapping[str, str]) -> NetworkChanged:
    """Parse ``config-network`` data (Knative's defaults for absent keys)."""
    where = CONFIG_NETWORK
    raw = data.get("enable-mesh-pod-addressability", "false").strip().lower()
    if raw not in _TRUE | _FALSE:
        raise NetworkError(f'{where}: enable-mesh-pod-addressability: invalid value "{raw}"')
    mode = data.get("mesh-compatibility-mode", "auto").strip().lower() or "auto"
    try:
        mesh = MeshMode(mode)
    except ValueError:
        raise NetworkError(
            f'{where}: mesh-compatibility-mode: invalid value "{mode}" (auto, enabled or disabled)'
        ) from None
    tls = data.get("system-internal-tls", "").strip().lower()
    legacy = data.get("internal-encryption", "false").strip().lower()
    if tls == "enabled" or legacy in _TRUE:
        raise NetworkError(
            f"{where}: system-internal-tls is enabled; Sluice's activator does not speak TLS "
            "to pods yet (see docs/kubernetes.md)"
        )
    return NetworkChanged(mesh, raw in _TRUE)


async def start_up(
    client: Getter, api_url: str, system_namespace: str, backoff: Backoff
) -> AsyncIterator[SourceHealth | NetworkChanged]:
    """``/version``, then ``config-network``, each retried with ``backoff`` until it works."""
    yield SourceHealth(f"waiting for the Kubernetes API at {api_url}")
    logged: str | None = None
    while True:
        try:
            await client.get("/version")
            break
        except KubeError as exc:
            if logged is None:
                log.warning("Kubernetes API at %s not answering (%s); retrying", api_url, exc)
            logged = str(exc)
        await asyncio.sleep(backoff.delay())
    backoff.reset()
    path = f"/api/v1/namespaces/{system_namespace}/configmaps/{CONFIG_NETWORK}"
    while True:
        try:
            cm = await client.get(path)
            data = cm.get("data") or {}
            if not isinstance(data, dict):
                raise NetworkError(f"{CONFIG_NETWORK}: data: expected a mapping")
            network = network_settings({str(k): str(v) for k, v in data.items()})
            break
        except (KubeError, NetworkError) as exc:
            reason = str(exc)
            if isinstance(exc, ApiError):
                reason = f"reading ConfigMap {CONFIG_NETWORK}: {exc}"
            if reason != logged:
                log.error("%s; retrying", reason)
                logged = reason
                yield SourceHealth(reason)
        await asyncio.sleep(backoff.delay())
    log.info(
        "config-network: mesh-compatibility-mode %s, pod addressability %s",
        network.mesh_mode.value,
        network.passthrough,
    )
    yield network
