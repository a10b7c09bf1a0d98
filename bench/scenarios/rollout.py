"""rollout: steady load while a new revision takes all the traffic; nothing may fail.

``hello-v1`` serves ``--users`` users at 10 requests/s each (``constant_throughput``); a third
of the way in, ``examples/canary/3-v2-100.yaml`` creates ``hello-v2`` with
``latestRevision: true``, and the route moves to it as soon as it is ready.
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
from bench.summary import between, request_summary, series, shares

DEFAULT_USERS = 20
RATE_PER_USER = 10.0
NEW = EXAMPLES / "canary" / "3-v2-100.yaml"


def run(ctx: Context) -> dict[str, Any]:
    users = ctx.users_or(DEFAULT_USERS)
    ctx.progress.set("starting sluice up with hello-v1")
    sluice = start_sluice(ctx.group, FAST_AUTOSCALER)
    sluice.apply(EXAMPLES / "hello.yaml")
    sluice.wait_ready("hello-v1")
    sampler = sampled(sluice)
    times: dict[str, float] = {}

    def roll_out() -> None:
        times["applied"] = time.time()
        sluice.apply(NEW)
        sluice.wait_routed("hello", {"hello-v2": 100})
        times["routed"] = time.time()

    env = base_env(HELLO, rate=RATE_PER_USER)
    run_ = LocustRun("rollout", "ServiceUser", sluice.url, users, ctx.duration, env, ctx.processes)
    phase = locust_phase(ctx, run_, sampler, during=[(ctx.duration / 3, roll_out)])
    t0, recs = phase.t0, phase.records
    marks = {f"{k} hello-v2": v - t0 for k, v in times.items()}
    plots.shares_over_time(series(recs, t0), ctx.path("shares.png"),
                           "rollout: share per revision", marks=marks)  # fmt: skip
    latency_plot(ctx, [phase], "rollout: latency through the activator", marks)
    pods = finish_pods(ctx, sampler, t0, "rollout: pods", marks, only=("hello-v1", "hello-v2"))
    summary = request_summary(recs)
    routed = times.get("routed", float("inf"))
    return {
        "results": {
            "users": users,
            "offered_rps": users * RATE_PER_USER,
            **summary,
            "applied_at_s": round(times["applied"] - t0, 2) if "applied" in times else None,
            "routed_at_s": round(routed - t0, 2) if "routed" in times else None,
            "shares_before": shares(between(recs, t0, times.get("applied", t0))),
            "shares_after": shares(between(recs, routed + 0.5, float("inf"))),
            "pods": pods,
        },
        "checks": {"zero_failures": summary["failures"] == 0, "rolled_out": "routed" in times},
    }
