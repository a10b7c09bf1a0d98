"""``python -m bench.kube_watch``: what watching N revisions costs the activator (memory, CPU).

Two reflectors (Revisions; private Endpoints, serving ports only) consume synthetic watch
streams from memory for a bounded time: no sockets, so the figures are the client layer's own
(``parse_event`` + decoder + reflector bookkeeping + a no-op consumer). The streams replay,
round after round, for each of ``--revisions`` revisions (default 2000):

* an Endpoints MODIFIED whose ready pods change (1 to 4 pods of 10-pod-shaped objects), so
  every one is an ``Upserted``;
* every fourth round, the same Endpoints again with only its resourceVersion changed, and a
  Revision MODIFIED that only touches status: both decode to equal projections and emit nothing.

Every watch ends after one round (as a server timeout would) and is resumed, exercising the
re-watch path. Printed each second: events consumed, RSS, RSS growth since the streams were
built, store sizes, and process-CPU µs per event. Lines are pre-encoded (their memory is in
the baseline, not the growth).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from types import TracebackType
from typing import Any

from activator.kube.client import ENDPOINTS, REVISIONS, Resource, parse_event
from activator.kube.objects import SERVING_PORT_NAMES, decode_endpoints, decode_revision
from activator.kube.reflector import Deleted, Reflector, Upserted
from bench.kube_client import endpoints_object, revision_object, watch_line

__all__ = ["main"]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class MemoryStream:
    """One round of pre-encoded watch lines, parsed as the real stream parses them."""

    def __init__(self, lines: Iterator[bytes], counter: list[int]) -> None:
        self._lines = lines
        self._counter = counter

    async def open(self) -> None:
        return None

    async def __aenter__(self) -> MemoryStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        line = next(self._lines, None)
        if line is None:
            raise StopAsyncIteration
        self._counter[0] += 1
        if self._counter[0] % 256 == 0:
            await asyncio.sleep(0)  # let the other reflector and the monitor run
        return parse_event(line)


class MemoryApi:
    """A ListWatcher whose lists are empty and whose watches replay rounds from memory."""

    def __init__(self, rounds: dict[str, list[list[bytes]]]) -> None:
        self._rounds = rounds
        self._next = dict.fromkeys(rounds, 0)
        self.events = [0]

    async def list(
        self, resource: Resource, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        return [], "1"

    def watch(
        self,
        resource: Resource,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> MemoryStream:
        rounds = self._rounds[resource.plural]
        n = self._next[resource.plural]
        self._next[resource.plural] = n + 1
        return MemoryStream(iter(rounds[n % len(rounds)]), self.events)


def build_rounds(revisions: int) -> dict[str, list[list[bytes]]]:
    endpoints: list[list[bytes]] = []
    revs: list[list[bytes]] = []
    for r in range(4):
        endpoints.append(
            [watch_line("MODIFIED", endpoints_object(i, r + 1)) for i in range(revisions)]
        )
        revs.append([watch_line("MODIFIED", revision_object(i)) for i in range(revisions)])
    # The no-op round: the last round's Endpoints again, only the resourceVersion moved.
    noop = []
    for i in range(revisions):
        obj = endpoints_object(i, 4)
        obj["metadata"]["resourceVersion"] = str(10**6 + i)
        noop.append(watch_line("MODIFIED", obj))
    endpoints.append(noop)
    status_only = []
    for i in range(revisions):
        rev = revision_object(i)
        rev["status"]["actualReplicas"] = 2
        status_only.append(watch_line("MODIFIED", rev))
    revs.append(status_only)
    return {"endpoints": endpoints, "revisions": revs}


async def run(revisions: int, seconds: float) -> None:
    rounds = build_rounds(revisions)
    gc.collect()
    baseline = rss_mib()
    api = MemoryApi(rounds)
    emitted = [0]

    def consume(event: Upserted[Any] | Deleted[Any]) -> None:
        emitted[0] += 1

    reflectors: list[Reflector[Any]] = [
        Reflector(api, REVISIONS, decode_revision, consume),
        Reflector(
            api,
            ENDPOINTS,
            partial(decode_endpoints, port_names=SERVING_PORT_NAMES),
            consume,
        ),
    ]
    print(f"{revisions} revisions; streams built, RSS {baseline:.1f} MiB (baseline)")
    print(f"{'t (s)':>6} {'events':>9} {'emitted':>9} {'RSS MiB':>8} {'growth':>7} "
          f"{'revs':>6} {'endpts':>6} {'µs/event':>9}")  # fmt: skip
    cpu0, wall0 = time.process_time(), time.monotonic()
    tasks = [asyncio.create_task(r.run()) for r in reflectors]
    try:
        for tick in range(1, int(seconds) + 1):
            await asyncio.sleep(max(0.0, wall0 + tick - time.monotonic()))
            events = api.events[0]
            us = (time.process_time() - cpu0) / max(1, events) * 1e6
            rss = rss_mib()
            revs, endpts = (len(r.store) for r in reflectors)
            print(f"{tick:6d} {events:9d} {emitted[0]:9d} {rss:8.1f} {rss - baseline:+7.1f} "
                  f"{revs:6d} {endpts:6d} {us:9.1f}")  # fmt: skip
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kube_watch", description=__doc__)
    parser.add_argument("--revisions", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0, help="bounded run time")
    args = parser.parse_args(argv)
    asyncio.run(run(args.revisions, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
