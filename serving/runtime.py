"""One revision's running side: its pods, its autoscaler and why it cannot run, if it cannot.

``RevisionRuntime`` holds what the control plane knows about a revision beyond its immutable
record. ``scale_plan`` is the pure decision of which pods to add or remove to reach the
desired count (Kubernetes' ReplicaSet order: remove pods that are not ready first, then the
newest); the control plane does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from activator.model import RevisionKey
from serving.autoscaler import RevisionAutoscaler
from serving.pods import LocalPod, PodPhase


@dataclass(frozen=True, slots=True)
class ScalePlan:
    start: int
    stop: tuple[LocalPod, ...]


def scale_plan(pods: Sequence[LocalPod], desired: int) -> ScalePlan:
    """Which pods to start or stop so that ``desired`` pods are live (not terminating)."""
    live = [p for p in pods if p.phase not in (PodPhase.TERMINATING, PodPhase.STOPPED)]
    if len(live) < desired:
        return ScalePlan(desired - len(live), ())
    excess = len(live) - desired
    if excess <= 0:
        return ScalePlan(0, ())
    order = sorted(live, key=lambda p: (p.ready, -p.created_at, p.name))
    return ScalePlan(0, tuple(order[:excess]))


@dataclass(slots=True)
class RevisionRuntime:
    key: RevisionKey
    service: str
    autoscaler: RevisionAutoscaler
    pods: list[LocalPod] = field(default_factory=list)
    started: int = 0
    #: Why no pod can be started (e.g. no ``command``); shown as the revision's reason.
    failure: str = ""
    retired: bool = False
    #: Created with initial scale 0 (allow-zero-initial-scale): Ready with no pods.
    zero_initial_scale: bool = False

    @property
    def live_pods(self) -> list[LocalPod]:
        return [p for p in self.pods if p.phase not in (PodPhase.TERMINATING, PodPhase.STOPPED)]

    @property
    def ready_pods(self) -> list[LocalPod]:
        return [p for p in self.pods if p.ready]

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(sorted(p.plan.endpoint for p in self.ready_pods))

    def next_index(self) -> int:
        self.started += 1
        return self.started

    def reason(self) -> str:
        if self.failure:
            return self.failure
        crashed = [p for p in self.pods if p.phase is PodPhase.CRASHED]
        return crashed[0].reason if crashed else ""
