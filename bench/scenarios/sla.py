"""Knative's SLA probes, reproduced at the scale of one 2-core machine.

Knative's performance tests (``test/performance/benchmarks``) hold these to SLAs on a
cluster; here they run on loopback with rates scaled down to fit beside the processes they
measure, and every summary says so.

* ``dataplane-probe``: a fixed rate (hey ``-n`` exact, ``-c 20 -q 5`` = 100 req/s) at an app
  answering in 100 ms (``info.py?sleep=0.1``), three ways: the app directly, through a
  queue-proxy, through the activator and a queue-proxy (``sluice up``), each after a 1 s
  warm-up at the same rate. Reported: p50/p95/p99 per hop and what each hop adds to the one
  before.
* ``load-test``: from zero pods, stepped load (locust ``SteppedShape``) on ``sleepy``
  (containerConcurrency 10, 0.5 s answers): 0 errors and the largest latency, while the
  autoscaler adds pods.
* ``rollout-probe``: a fixed rate (hey, 200 req/s) while a new revision rolls out: the rate
  held within 1 % and 0 errors.
"""

from __future__ import annotations

import time
from typing import Any

from bench import plots
from bench.hey import finish_hey, start_hey
from bench.locustrun import LocustRun
from bench.records import Record, write_records
from bench.scenarios.common import (
    FAST_AUTOSCALER,
    HELLO,
    Context,
    Phase,
    finish_pods,
    latency_plot,
    locust_phase,
    sampled,
)
from bench.stack import EXAMPLES, start_app, start_queue_proxy, start_sluice
from bench.summary import added_latency, elapsed, latency_stats, rate_check, request_summary

SCALE_NOTE = (
    "scaled to one shared 2-core machine: every component, the app and the load generator "
    "share 2 CPUs on loopback; rates are far below Knative's cluster runs"
)
PROBE_WORKERS, PROBE_QPS = 20, 5.0  # 100 req/s against 100 ms answers: ~10 in flight
ROLLOUT_WORKERS, ROLLOUT_QPS = 10, 20.0  # 200 req/s
SLEEPY = "sleepy.default.localhost"
WARMUP_S = 1.0


def _hey_phase(
    ctx: Context, label: str, url: str, host: str, seconds: float, workers: int, qps: float
) -> tuple[Phase, int]:
    requests = max(workers, round(seconds * workers * qps))
    headers = {"Host": host} if host else {}
    # Warm-up at the same rate, not recorded: the first second through a fresh activator
    # opens its connections to the pod, which is a cost of starting, not of the hop.
    warm = max(workers, round(WARMUP_S * workers * qps))
    ctx.progress.set(f"{label}: warm-up, hey -n {warm}", WARMUP_S)
    popen, started = start_hey(ctx.group, f"warm-{label}", url, warm, workers, qps, headers)
    finish_hey(ctx.group, f"warm-{label}", popen, started, WARMUP_S)
    ctx.progress.set(f"{label}: hey -n {requests} -c {workers} -q {qps:g}", seconds)
    popen, started = start_hey(ctx.group, f"hey-{label}", url, requests, workers, qps, headers)
    records = finish_hey(ctx.group, f"hey-{label}", popen, started, seconds)
    write_records(ctx.path(f"requests-{label}.csv"), records)
    return Phase(label, started, records), requests


def dataplane_probe(ctx: Context) -> dict[str, Any]:
    ctx.progress.set("starting the app, a queue-proxy and sluice up")
    sluice = start_sluice(ctx.group, FAST_AUTOSCALER)
    sluice.apply(EXAMPLES / "hello.yaml")
    sluice.wait_ready("hello-v1")
    _, app_port = start_app(ctx.group)
    _, qp_port = start_queue_proxy(ctx.group, app_port)
    hops = (
        ("direct", f"http://127.0.0.1:{app_port}/?sleep=0.1", ""),
        ("queue-proxy", f"http://127.0.0.1:{qp_port}/?sleep=0.1", ""),
        ("activator+queue-proxy", f"{sluice.url}/?sleep=0.1", HELLO),
    )
    phases, results, exact = [], {}, {}
    seconds = ctx.duration / len(hops)
    for label, url, host in hops:
        phase, want = _hey_phase(ctx, label, url, host, seconds, PROBE_WORKERS, PROBE_QPS)
        phases.append(phase)
        results[label] = request_summary(phase.records)
        exact[label] = len(phase.records) == want and results[label]["failures"] == 0
    latency_plot(ctx, phases, "dataplane-probe: 100 req/s at a 100 ms app", width=1.0)
    stats = {k: v["latency_ms"] for k, v in results.items()}
    vs_direct = added_latency(stats, "direct")
    per_hop = {
        "queue-proxy": vs_direct["queue-proxy"],
        "activator": added_latency(stats, "queue-proxy")["activator+queue-proxy"],
    }
    plots.bars(per_hop, ctx.path("added-latency.png"),
               "dataplane-probe: latency each hop adds (ms)", "ms")  # fmt: skip
    return {
        "scaled": SCALE_NOTE,
        "results": {
            "rate_rps": PROBE_WORKERS * PROBE_QPS,
            "app_latency_s": 0.1,
            "hops": results,
            "added_vs_direct_ms": vs_direct,
            "added_per_hop_ms": per_hop,
        },
        "checks": {"request_count_exact_and_no_errors": all(exact.values())},
    }


def _steps(duration: float, quick: bool, users: int | None) -> list[tuple[int, float]]:
    top = users or 30
    levels = [max(1, top // 6), max(1, top // 3), max(1, (2 * top) // 3), top]
    if quick:
        levels = levels[:2]
    return [(u, duration / len(levels)) for u in levels]


def load_test(ctx: Context) -> dict[str, Any]:
    ctx.progress.set("starting sluice up; waiting for sleepy to reach zero")
    sluice = start_sluice(ctx.group, ("stable-window=2s", "scale-to-zero-grace-period=0.5s"))
    sluice.apply(EXAMPLES / "sleepy.yaml")
    sluice.wait_ready("sleepy-00001")
    sampler = sampled(sluice)
    sluice.wait_scale("sleepy-00001", 0)
    steps = _steps(ctx.duration, ctx.quick, ctx.users)
    env = {"SLUICE_BENCH_HOST_HEADER": SLEEPY, "SLUICE_BENCH_PATH": "/",
           "SLUICE_BENCH_STEPS": ",".join(f"{u}:{s:g}" for u, s in steps)}  # fmt: skip
    top = max(u for u, _ in steps)
    run_ = LocustRun("load-test", "ServiceUser", sluice.url, top, ctx.duration, env, ctx.processes)
    phase = locust_phase(ctx, run_, sampler)
    marks, at = {}, 0.0
    for users, seconds in steps:
        marks[f"{users} users"] = at
        at += seconds
    latency_plot(ctx, [phase], "load-test: from zero, stepped users (sleepy, 0.5 s)", marks)
    pods = finish_pods(ctx, sampler, phase.t0, "load-test: pods of sleepy", marks,
                       only=("sleepy-00001",))  # fmt: skip
    summary = request_summary(phase.records)
    per_step, at = [], phase.t0
    for users, seconds in steps:
        chunk = [r for r in phase.records if at <= r.t < at + seconds]
        per_step.append({"users": users, "seconds": seconds, **request_summary(chunk)})
        at += seconds
    first = phase.records[0].latency_ms if phase.records else None
    return {
        "scaled": SCALE_NOTE,
        "results": {
            **summary,
            "max_latency_ms": summary["latency_ms"]["max"],
            "first_request_ms": first,
            "steps": per_step,
            "pods": pods,
        },
        "checks": {"zero_errors": summary["failures"] == 0, "started_from_zero": True},
    }


def rollout_probe(ctx: Context) -> dict[str, Any]:
    ctx.progress.set("starting sluice up with hello-v1")
    sluice = start_sluice(ctx.group, FAST_AUTOSCALER)
    sluice.apply(EXAMPLES / "hello.yaml")
    sluice.wait_ready("hello-v1")
    sampler = sampled(sluice)
    label = "rollout-probe"
    requests = round(ctx.duration * ROLLOUT_WORKERS * ROLLOUT_QPS)
    target = ROLLOUT_WORKERS * ROLLOUT_QPS
    ctx.progress.set(f"hey -n {requests} -c {ROLLOUT_WORKERS} -q {ROLLOUT_QPS:g}", ctx.duration)
    popen, started = start_hey(ctx.group, f"hey-{label}", f"{sluice.url}/", requests,
                               ROLLOUT_WORKERS, ROLLOUT_QPS, {"Host": HELLO})  # fmt: skip
    time.sleep(ctx.duration / 3)
    times = {"applied": time.time()}
    sluice.apply(EXAMPLES / "canary" / "3-v2-100.yaml")
    sluice.wait_routed("hello", {"hello-v2": 100})
    times["routed"] = time.time()
    records: list[Record] = finish_hey(ctx.group, f"hey-{label}", popen, started, ctx.duration)
    write_records(ctx.path(f"requests-{label}.csv"), records)
    phase = Phase(label, started, records)
    marks = {f"{k} hello-v2": v - started for k, v in times.items()}
    latency_plot(ctx, [phase], "rollout-probe: 200 req/s while hello-v2 rolls out", marks)
    pods = finish_pods(ctx, sampler, started, "rollout-probe: pods", marks,
                       only=("hello-v1", "hello-v2"))  # fmt: skip
    summary = request_summary(records)
    rate = rate_check(len(records), elapsed(records), target)
    return {
        "scaled": SCALE_NOTE,
        "results": {
            **summary,
            "requests_sent": requests,
            "rate": rate,
            "applied_at_s": round(times["applied"] - started, 2),
            "routed_at_s": round(times["routed"] - started, 2),
            "latency_ms": latency_stats(r.latency_ms for r in records if r.ok),
            "pods": pods,
        },
        "checks": {
            "zero_errors": summary["failures"] == 0 and len(records) == requests,
            "rate_within_1_percent": rate["within"],
        },
    }
