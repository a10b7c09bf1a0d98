"""overload: far more concurrent users than a queue-proxy admits; how fast are rejects?

A queue-proxy alone (containerConcurrency 1, so Knative's breaker admits 1 request and
queues 10) in front of ``info.py`` answering in ~50 ms: about 20 req/s of capacity against
``--users`` closed-loop users (default 50). Beyond the queue the breaker answers 503 at once;
the figures are the share of 503s and their latency next to the accepted requests'.
Through the activator the same load would queue instead (its per-revision buffer holds
10 000 requests), which is why the rejecting hop measured here is the queue-proxy.
"""

from __future__ import annotations

from typing import Any

from bench import plots
from bench.hotpath.procs import tree_rss_kib
from bench.locustrun import LocustRun
from bench.scenarios.common import Context, base_env, locust_phase
from bench.stack import start_app, start_queue_proxy
from bench.summary import overload_summary, series

DEFAULT_USERS = 50
CONTAINER_CONCURRENCY = 1
PATH = "/?sleep=0.05"


def run(ctx: Context) -> dict[str, Any]:
    users = ctx.users_or(DEFAULT_USERS)
    ctx.progress.set("starting the app and a queue-proxy (containerConcurrency 1)")
    _, app_port = start_app(ctx.group)
    qp, qp_port = start_queue_proxy(ctx.group, app_port, CONTAINER_CONCURRENCY)
    idle_rss = tree_rss_kib(qp.pid)
    run_ = LocustRun("overload", "ServiceUser", f"http://127.0.0.1:{qp_port}", users,
                     ctx.duration, base_env("", PATH), ctx.processes)  # fmt: skip
    phase = locust_phase(ctx, run_)
    loaded_rss = tree_rss_kib(qp.pid)
    recs = phase.records
    accepted = [r for r in recs if r.ok]
    rejected = [r for r in recs if r.status == 503]
    plots.latency_over_time(
        {"accepted": series(accepted, phase.t0), "503": series(rejected, phase.t0, ok_only=False)},
        ctx.path("latency.png"), f"overload: {users} users vs containerConcurrency 1", log=True,
    )  # fmt: skip
    summary = overload_summary(recs)
    return {
        "results": {
            "users": users,
            "container_concurrency": CONTAINER_CONCURRENCY,
            "queue_depth": 10 * CONTAINER_CONCURRENCY,
            "app_path": PATH,
            **summary,
            "queue_proxy_rss_kib": {"idle": idle_rss, "after_load": loaded_rss},
        },
        "checks": {
            "rejects_seen": summary["rejected_503"] > 0,
            "no_other_failures": summary["other_failures"] == 0,
        },
    }
