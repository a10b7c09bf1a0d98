"""hotpath: the same GET through activator -> queue-proxy -> app, a queue-proxy alone, the app.

Closed loop (locust users send as fast as answers come back), one path after the other, a
third of ``--duration`` each. The app is ``examples/apps/info.py`` (a threaded stdlib server),
so absolute req/s are the app's; the ratios between the paths are what the proxies cost.
"""

from __future__ import annotations

from typing import Any

from bench.locustrun import LocustRun
from bench.scenarios.common import (
    FAST_AUTOSCALER,
    HELLO,
    Context,
    Phase,
    base_env,
    latency_plot,
    locust_phase,
)
from bench.stack import EXAMPLES, start_app, start_queue_proxy, start_sluice
from bench.summary import request_summary

DEFAULT_USERS = 32


def run(ctx: Context) -> dict[str, Any]:
    users = ctx.users_or(DEFAULT_USERS)
    ctx.progress.set("starting sluice up, a queue-proxy and the app")
    sluice = start_sluice(ctx.group, FAST_AUTOSCALER)
    sluice.apply(EXAMPLES / "hello.yaml")
    sluice.wait_ready("hello-v1")
    _, app_port = start_app(ctx.group)
    _, qp_port = start_queue_proxy(ctx.group, app_port)
    paths = (
        ("activator", sluice.url, HELLO),
        ("queue-proxy", f"http://127.0.0.1:{qp_port}", ""),
        ("direct", f"http://127.0.0.1:{app_port}", ""),
    )
    phases: list[Phase] = []
    for label, host, header in paths:
        run_ = LocustRun(label, "ServiceUser", host, users, ctx.duration / len(paths),
                         base_env(header), ctx.processes)  # fmt: skip
        phases.append(locust_phase(ctx, run_))
    latency_plot(ctx, phases, f"hot path: latency, {users} closed-loop users", log=True)
    by_path = {p.label: request_summary(p.records) for p in phases}
    direct = by_path["direct"]
    ratios: dict[str, dict[str, float | None]] = {}
    for label in ("activator", "queue-proxy"):
        mine = by_path[label]
        ratios[label] = {
            "rps_vs_direct": _ratio(mine["rps"], direct["rps"]),
            "p50_vs_direct": _ratio(mine["latency_ms"]["p50"], direct["latency_ms"]["p50"]),
            "p99_vs_direct": _ratio(mine["latency_ms"]["p99"], direct["latency_ms"]["p99"]),
        }
    return {
        "results": {"users": users, "paths": by_path, "ratios": ratios},
        "checks": {"no_failures": all(v["failures"] == 0 for v in by_path.values())},
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)
