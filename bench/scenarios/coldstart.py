"""coldstart: time to first byte for a revision at zero pods, again and again.

One locust user (``ColdStartUser``) waits until ``hello-v1`` has no pod, sends one request
through the activator and records the time until the response headers arrive; the activator
holds the request, pokes the autoscaler, a pod (app + queue-proxy processes) starts and
answers its probe, and the request goes through. Windows are shortened
(``stable-window=1s``, ``scale-to-zero-grace-period=0.5s``) so a cycle takes ~4 s.
"""

from __future__ import annotations

from typing import Any

from bench import plots
from bench.locustrun import LocustRun
from bench.scenarios.common import HELLO, Context, base_env, finish_pods, locust_phase, sampled
from bench.stack import EXAMPLES, start_sluice
from bench.summary import latency_stats

AUTOSCALER = ("stable-window=1s", "scale-to-zero-grace-period=0.5s")
REVISION = "hello-v1"


def run(ctx: Context) -> dict[str, Any]:
    ctx.progress.set("starting sluice up; waiting for hello-v1 to reach zero")
    sluice = start_sluice(ctx.group, AUTOSCALER)
    sluice.apply(EXAMPLES / "hello.yaml")
    sluice.wait_ready(REVISION)
    sampler = sampled(sluice)
    sluice.wait_scale(REVISION, 0)
    env = {**base_env(HELLO), "SLUICE_BENCH_API": sluice.api, "SLUICE_BENCH_REVISION": REVISION}
    run_ = LocustRun("coldstart", "ColdStartUser", sluice.url, 1, ctx.duration, env)
    phase = locust_phase(ctx, run_, sampler)
    cold = [r for r in phase.records if r.name == "cold-start"]
    ttfb = [r.latency_ms for r in cold if r.ok]
    plots.distribution(ttfb, ctx.path("coldstart.png"),
                       "cold start: time to first byte from zero pods", "ms")  # fmt: skip
    pods = finish_pods(ctx, sampler, phase.t0, "cold start: pods of hello-v1", only=(REVISION,))
    return {
        "results": {
            "samples": len(cold),
            "failures": sum(not r.ok for r in cold),
            "ttfb_ms": latency_stats(ttfb),
            "each_ms": [round(x, 1) for x in ttfb],
            "autoscaler": list(AUTOSCALER),
            "pods": pods,
        },
        "checks": {"at_least_one_sample": len(ttfb) >= 1, "no_failures": all(r.ok for r in cold)},
    }
