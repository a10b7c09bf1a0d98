"""siege: the tutorial's run, ``siege -c 500`` against containerConcurrency 100, max-scale 3.

``examples/siege.yaml`` (``info.py`` sleeping 0.2 s per request). siege's own summary is
reported as it prints it, with the pods that served from the API's samples: the autoscaler
wants more than 3 pods, max-scale caps it, and the activator queues the rest.
"""

from __future__ import annotations

import time
from typing import Any

from bench.monitor import pods_line
from bench.scenarios.common import FAST_AUTOSCALER, Context, finish_pods, sampled
from bench.siege import run_siege
from bench.stack import EXAMPLES, start_sluice

DEFAULT_USERS = 500
REVISION = "siege-00001"
#: Requests per user in a --quick run: a repetition count, because siege's timed runs can
#: hang at the end (see bench.siege.run_siege), and the CI smoke must not.
QUICK_REPS = 4


def run(ctx: Context) -> dict[str, Any]:
    users = ctx.users_or(DEFAULT_USERS)
    seconds = max(1, round(ctx.duration))
    ctx.progress.set("starting sluice up with the siege service")
    sluice = start_sluice(ctx.group, FAST_AUTOSCALER)
    sluice.apply(EXAMPLES / "siege.yaml")
    sluice.wait_ready(REVISION)
    sampler = sampled(sluice)
    reps = QUICK_REPS if ctx.quick else None
    mode = f"-r {reps}" if reps is not None else f"-t {seconds}S"
    ctx.progress.set(f"siege -c {users} {mode}", seconds, lambda: pods_line(sampler))
    t0 = time.time()
    summary = run_siege(
        f"{sluice.url}/",
        users=users,
        duration_s=seconds,
        headers={"Host": "siege.default.localhost"},
        rc_path=ctx.out / "siegerc",
        log_path=ctx.path("siege.txt"),
        reps=reps,
    )
    pods = finish_pods(ctx, sampler, t0, f"siege -c {users}: pods of {REVISION}",
                       only=(REVISION,))  # fmt: skip
    mine = pods.get(REVISION, {})
    return {
        "results": {
            "users": users,
            "seconds": seconds,
            "siege": summary,
            "pods": pods,
            "pods_that_served": mine.get("pods", []),
        },
        "checks": {
            "availability_100": summary.get("availability") == 100.0,
            "capped_at_max_scale_3": mine.get("max_actual", 0) <= 3,
        },
    }
