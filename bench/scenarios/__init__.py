"""The scenarios of ``python -m bench``: name -> (function, description, default seconds).

Each function gets a ``Context`` (output directory, duration, users, the process group) and
returns ``{"results": ..., "checks": {...}}`` (plus ``"scaled"`` for the SLA reproductions);
the driver wraps that into ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.scenarios import coldstart, hotpath, overload, rollout, siege, sla, split
from bench.scenarios.common import Context


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    run: Callable[[Context], dict[str, Any]]
    description: str
    default_s: float
    quick_s: float
    #: External tools it needs besides locust (always needed but for siege/hey-only runs).
    tools: tuple[str, ...] = ()
    locust: bool = True


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("hotpath", hotpath.run, "GET via activator+queue-proxy, queue-proxy, direct",
                 30, 3),
        Scenario("split", split.run, "canary 50/50 then 10/90: share per revision", 30, 4),
        Scenario("coldstart", coldstart.run, "time to first byte from zero pods, repeated",
                 30, 3),
        Scenario("overload", overload.run, "beyond capacity: 503 share and reject latency",
                 30, 3),
        Scenario("rollout", rollout.run, "steady load while a new revision takes over", 30, 5),
        Scenario("dataplane-probe", sla.dataplane_probe,
                 "Knative SLA: latency added per hop at a fixed rate (hey)", 30, 3,
                 ("hey",), locust=False),
        Scenario("load-test", sla.load_test, "Knative SLA: from zero, stepped load, 0 errors",
                 30, 4),
        Scenario("rollout-probe", sla.rollout_probe,
                 "Knative SLA: fixed rate held within 1 % during a rollout (hey)", 30, 5,
                 ("hey",), locust=False),
        Scenario("siege", siege.run, "the tutorial's siege -c 500 vs CC 100 / max-scale 3",
                 60, 5, ("siege",), locust=False),
    )
}  # fmt: skip
