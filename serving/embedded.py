"""The activator, in-process: an embedded source and an embedded scaler around ``Activator``.

* Source: an ``activator.source.PushSource`` fed by the control plane with a new
  ``RoutingConfig`` whenever routes or ready pods change (endpoints are the ready pods'
  queue-proxy addresses; the activator still probes each before use).
* Scaler: ``EmbeddedScaler`` hands the activator's pokes and 1 s reports straight to the
  control plane's KPA (``ControlPlane.handle_stats``), on the same event loop.

Every route goes through the activator, as Knative does with ``target-burst-capacity: -1``,
so the throttler spreads load within each pod's ``containerConcurrency``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from activator.app import Activator, Settings
from activator.model import RevisionKey
from activator.source import PushSource
from activator.stats import StatBatch
from proxy.dataplane.autoscaler_stat_pb import Stat

#: In embedded mode nobody load-balances in front of the activator, so there is nothing to
#: wait for on shutdown beyond in-flight requests.
EMBEDDED_DRAIN_SECONDS = 0.0
POD_NAME = "sluice-activator"


class EmbeddedScaler:
    """Implements ``activator.scaler.Scaler`` by calling ``sink`` synchronously."""

    def __init__(self, sink: Callable[[Sequence[tuple[str, str, Stat]]], None]) -> None:
        self.sink = sink

    def poke(self, batch: StatBatch) -> None:
        self.sink(batch)

    def report(self, batch: StatBatch) -> None:
        self.sink(batch)

    def __repr__(self) -> str:
        return "EmbeddedScaler()"


def make_activator(
    host: str,
    port: int,
    source: PushSource,
    sink: Callable[[Sequence[tuple[str, str, Stat]]], None],
) -> Activator:
    settings = Settings(
        config=Path("<embedded>"),
        host=host,
        port=port,
        metrics_port=0,
        drain_seconds=EMBEDDED_DRAIN_SECONDS,
        pod_name=POD_NAME,
    )
    return Activator(settings, source, EmbeddedScaler(sink))


def queue_depths(activator: Activator) -> Mapping[RevisionKey, int]:
    """Requests the activator holds per revision (waiting for a pod or a slot)."""
    return {key: t.waiting for key, t in activator.handler.snapshot.throttlers.items()}
