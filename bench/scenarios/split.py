"""split: the tutorial's canary, measured. 50/50 for the first half, then 10/90.

Every answer names the revision that served it (``info.py``'s JSON); the share per revision
is computed per second and per phase, against the route's percentages. Each request draws
independently, so the split is statistical.
"""

from __future__ import annotations

import time
from typing import Any

from bench import plots
from bench.locustrun import LocustRun
from bench.scenarios.common import (
    FAST_AUTOSCALER,
    HELLO,
    Context,
    base_env,
    finish_pods,
    latency_plot,
    locust_phase,
    sampled,
)
from bench.stack import EXAMPLES, start_sluice
from bench.summary import between, request_summary, series, share_error, shares

DEFAULT_USERS = 20
FIRST = {"hello-v1": 0.5, "hello-v2": 0.5}
SECOND = {"hello-v1": 0.1, "hello-v2": 0.9}


def run(ctx: Context) -> dict[str, Any]:
    users = ctx.users_or(DEFAULT_USERS)
    ctx.progress.set("starting sluice up with hello-v1 and hello-v2 at 50/50")
    sluice = start_sluice(ctx.group, FAST_AUTOSCALER)
    sluice.apply(EXAMPLES / "hello.yaml")
    sluice.wait_ready("hello-v1")
    sluice.apply(EXAMPLES / "canary" / "1-v2-50-50.yaml")
    sluice.wait_ready("hello-v2")
    sluice.wait_routed("hello", {"hello-v1": 50, "hello-v2": 50})
    sampler = sampled(sluice)
    switched: list[float] = []

    def to_10_90() -> None:
        sluice.apply(EXAMPLES / "canary" / "2-v2-10-90.yaml")
        sluice.wait_routed("hello", {"hello-v1": 10, "hello-v2": 90})
        switched.append(time.time())

    run_ = LocustRun("split", "ServiceUser", sluice.url, users, ctx.duration, base_env(HELLO),
                     ctx.processes)  # fmt: skip
    phase = locust_phase(ctx, run_, sampler, during=[(ctx.duration / 2, to_10_90)])
    t0, recs = phase.t0, phase.records
    t_switch = switched[0] if switched else recs[-1].t if recs else t0
    # Requests in flight while the route changed may go either way: leave 0.5 s out.
    first = between(recs, t0, t_switch - 0.5)
    second = between(recs, t_switch + 0.5, float("inf"))
    marks = {"10/90 applied": t_switch - t0}
    buckets = series(recs, t0)
    plots.shares_over_time(
        buckets, ctx.path("shares.png"), "split: share per revision (canary 50/50 -> 10/90)",
        expected=[(0, t_switch - t0, FIRST), (t_switch - t0, buckets[-1].t if buckets else 0,
                                               SECOND)],
        marks=marks,
    )  # fmt: skip
    latency_plot(ctx, [phase], "split: latency through the activator", marks)
    pods = finish_pods(ctx, sampler, t0, "split: pods", marks, only=("hello-v1", "hello-v2"))
    obs1, obs2 = shares(first), shares(second)
    return {
        "results": {
            "users": users,
            "requests": request_summary(recs),
            "phases": [
                {
                    "route": FIRST,
                    "observed": obs1,
                    "requests": len(first),
                    "max_abs_error": share_error(obs1, FIRST),
                },
                {
                    "route": SECOND,
                    "observed": obs2,
                    "requests": len(second),
                    "max_abs_error": share_error(obs2, SECOND),
                },
            ],
            "switch_at_s": round(t_switch - t0, 2),
            "pods": pods,
        },
        "checks": {
            "no_failures": all(r.ok for r in recs),
            "shares_within_5_points": share_error(obs1, FIRST) <= 0.05
            and share_error(obs2, SECOND) <= 0.05,
        },
    }
