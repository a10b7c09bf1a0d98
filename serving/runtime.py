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
from serving.failures import DEFAULT_PROGRESS_DEADLINE, Failure, deadline_failure
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
    #: When the control plane took the revision on (its clock) and how long it may take to
    #: become ready (``serving.knative.dev/progress-deadline``).
    created_at: float = 0.0
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    deadline_reported: bool = False

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
        if crashed:
            return crashed[0].reason
        probing = [p.last_probe_error for p in self.live_pods if p.last_probe_error]
        return f"last probe error: {probing[-1]}" if probing else ""

    def failed(self, now: float) -> Failure | None:
        """Why a revision that has not become ready is failed (Ready False), or None while it
        may still come up: no pod can be planned, a pod's process ended (the latest failure
        wins), or the progress deadline passed with no ready pod."""
        if self.failure:
            return Failure("RevisionFailed", self.failure)
        if self.ready_pods:
            return None
        failures = [p.failure for p in self.live_pods if p.failure is not None]
        if failures:
            return failures[-1]
        if self.live_pods and now - self.created_at >= self.progress_deadline:
            errors = [p.last_probe_error for p in self.live_pods if p.last_probe_error]
            return deadline_failure(self.progress_deadline, errors[-1] if errors else "")
        return None
