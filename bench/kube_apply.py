"""``python -m bench.kube_apply``: what one Kubernetes event costs the activator, by revisions.

The activator of Kubernetes mode applies each cluster event to the one revision it names
(``activator.app``): its throttler, its pod watcher, its routing entry. This benchmark checks
that claim where it matters, the Endpoints stream (every pod start, stop and readiness change
is an event): for each revision count in ``--revisions`` it starts a real ``Activator`` on
loopback (port 0), adds that many revisions, then feeds ``PodsChanged`` updates round-robin
through the activator's own update queue for ``--seconds``, each one changing a revision's
ready pods so that its watcher probes the new pod (a probe stub that passes at once: no
sockets, so the figure is the activator's own work) and its throttler is given the new set.

Printed per revision count: process-CPU µs per event (update applied + watcher round +
throttler update), and RSS at the start and end of the run. The cost per event should not grow
with the number of revisions, and RSS should not grow during a run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time

from activator.app import Activator, Settings
from activator.backends import ProbeOutcome
from activator.model import PodsChanged, Revision, RevisionChanged, RoutingConfig
from activator.scaler import NullScaler
from activator.source import PushSource

__all__ = ["main", "measure"]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


async def _passes(dest: str, timeout: float) -> ProbeOutcome:
    return ProbeOutcome.OK


async def measure(revisions: int, seconds: float) -> tuple[float, int, float, float]:
    """(µs per event, events, RSS MiB after set-up, RSS MiB at the end) for one count."""
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, probe_interval=0.01)
    act = Activator(settings, PushSource(RoutingConfig()), scaler=NullScaler(), probe=_passes)
    await act.start(wait_for_config=True)
    try:
        keys = []
        for i in range(revisions):
            rev = Revision(f"rev-{i:05d}", f"ns-{i % 50}", container_concurrency=10)
            keys.append(rev.key)
            act.updates.put_nowait(RevisionChanged(rev))
            first = frozenset({f"10.0.{i % 250}.1:8012"})
            act.updates.put_nowait(PodsChanged(rev.key, first, frozenset()))
        throttlers = act.handler.snapshot.throttlers

        def all_healthy() -> bool:
            return sum(1 for t in throttlers.values() if t.pods) == revisions

        await act.wait_for(all_healthy, timeout=120)
        gc.collect()
        start_rss = rss_mib()
        cpu0, wall0 = time.process_time(), time.monotonic()
        events = 0
        while time.monotonic() - wall0 < seconds:
            # A batch touches each revision at most once, so no count gets to coalesce
            # several changes of one revision into one watcher round.
            for _ in range(min(256, revisions)):
                i = events % revisions
                # Alternate each revision between one pod and two: every event changes it.
                pods = {f"10.0.{i % 250}.1:8012"}
                if (events // revisions) % 2 == 0:
                    pods.add(f"10.1.{i % 250}.1:8012")
                act.updates.put_nowait(PodsChanged(keys[i], frozenset(pods), frozenset()))
                events += 1
            while not act.updates.empty():
                await asyncio.sleep(0)
            await asyncio.sleep(0.001)  # the watchers' probe rounds and their updates
        while not act.updates.empty():
            await asyncio.sleep(0.001)
        cpu = time.process_time() - cpu0
        return cpu / events * 1e6, events, start_rss, rss_mib()
    finally:
        await act.close()


async def run(counts: list[int], seconds: float) -> None:
    print(f"{'revisions':>9} {'events':>9} {'µs/event':>9} {'RSS start':>10} {'RSS end':>8}")
    for n in counts:
        us, events, rss0, rss1 = await measure(n, seconds)
        print(f"{n:9d} {events:9d} {us:9.1f} {rss0:10.1f} {rss1:8.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kube_apply", description=__doc__)
    parser.add_argument("--revisions", default="20,2000", help="comma-separated counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="bounded run time per count")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.revisions.split(",") if c.strip()]
    if not counts or min(counts) < 1 or args.seconds <= 0:
        print("kube_apply: --revisions needs counts >= 1 and --seconds > 0", file=sys.stderr)
        return 1
    import uvloop

    uvloop.run(run(counts, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
