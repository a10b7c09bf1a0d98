"""Per-revision autoscaling: what the KPA sees and what it wants, with an injected clock.

``RevisionAutoscaler`` wraps the pure ``Decider`` and ``ScaleToZeroGate`` of ``serving.kpa``
with the inputs of embedded mode:

* the pods' protobuf ``Stat`` (scraped every second from each queue-proxy's stats port):
  their concurrency minus what the activator proxied to them, because the activator reports
  that part itself (Knative's autoscaler subtracts proxied concurrency the same way);
* the activator's stats (its 1 s report and its immediate poke on the first request for an
  idle revision): the requests it holds or forwards.

``observe`` records one second's total; ``tick`` (every 2 s) and ``poke`` (at once) return the
desired pod count. The owning control plane is the only caller; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.dataplane.autoscaler_stat_pb import Stat
from serving.autoscaling_config import RevisionScalingSpec
from serving.kpa import Decider, ScaleToZeroGate

#: An activator report older than this no longer counts (it reports every second).
ACTIVATOR_STAT_TTL = 2.5


@dataclass(frozen=True, slots=True)
class Observation:
    """One second of figures for a revision, for ``sluice top`` and the decider."""

    pod_concurrency: float = 0.0
    activator_concurrency: float = 0.0
    requests_per_second: float = 0.0

    @property
    def concurrency(self) -> float:
        return self.pod_concurrency + self.activator_concurrency


class RevisionAutoscaler:
    def __init__(self, spec: RevisionScalingSpec, now: float, initial: int) -> None:
        self.spec = spec
        self.decider = Decider(spec, now)
        self.gate = ScaleToZeroGate(spec.scale_to_zero_grace_period)
        self.desired = initial
        self.last = Observation()
        self._activator: tuple[float, Stat] | None = None

    def __repr__(self) -> str:
        return f"<RevisionAutoscaler desired={self.desired} {self.decider!r}>"

    def activator_stat(self, now: float, stat: Stat) -> None:
        self._activator = (now, stat)

    def observe(self, now: float, pod_stats: Sequence[Stat]) -> Observation:
        """Record the pods' and the activator's figures for the second ending at ``now``."""
        pods = sum(
            max(0.0, s.average_concurrent_requests - s.average_proxied_concurrent_requests)
            for s in pod_stats
        )
        act = 0.0
        rps = sum(s.request_count for s in pod_stats)
        if self._activator is not None and now - self._activator[0] <= ACTIVATOR_STAT_TTL:
            act = self._activator[1].average_concurrent_requests
            if not pod_stats:
                rps = self._activator[1].request_count
        self.last = Observation(pods, act, rps)
        self.decider.record(now, self.last.concurrency)
        return self.last

    def tick(self, now: float, ready_pods: int, current_pods: int, reachable: bool) -> int:
        """The regular decision; updates and returns ``desired``."""
        decision = self.decider.decide(now, ready_pods, reachable=reachable)
        self.desired = self.gate.apply(now, decision.desired_pods, current_pods)
        return self.desired

    def poke(self, now: float, stat: Stat, ready_pods: int) -> int | None:
        """The activator saw traffic: decide at once if the revision is at zero.

        Returns the new desired count, or ``None`` when nothing changes.
        """
        self.activator_stat(now, stat)
        if stat.average_concurrent_requests <= 0 or self.desired > 0:
            return None
        self.decider.record(now, stat.average_concurrent_requests)
        decision = self.decider.poke(now, ready_pods)
        if decision is None or decision.desired_pods <= 0:
            return None
        self.desired = self.gate.apply(now, decision.desired_pods, ready_pods)
        return self.desired
