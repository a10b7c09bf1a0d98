"""Per-revision concurrency accounting for the autoscaler: the poke and the 1 s report (§2.9).

``ConcurrencyReporter`` is pure: every method takes ``now`` and returns the batch to send, if
any; the caller (the request path for pokes, one reporting task for reports) hands batches to
a ``Scaler``. Rules:

* A request for a revision with no entry creates one and returns the *poke* batch,
  ``Stat{pod_name, average_concurrent_requests: 1, request_count: 1}``, to send at once.
* ``report`` returns one batch for every entry. The first report after an entry was created
  discounts the poke: ``avg = max(0, avg - 1)`` and ``count - 1``.
* An entry whose raw average concurrency over the period was 0 and that no request holds is
  deleted after the report, so the next request for that revision pokes again.

Requests are counted from arrival (before any queueing) to the end of their response, so
time spent waiting for a pod counts as concurrency: that is what wakes the autoscaler.
"""

from __future__ import annotations

from dataclasses import dataclass

from activator.model import RevisionKey
from proxy.dataplane.autoscaler_stat_pb import Stat
from proxy.dataplane.concurrency import RequestStats

__all__ = ["ConcurrencyReporter", "StatBatch"]

#: (namespace, revision name, stat) triples, the autoscaler's ``WireStatMessages`` shape.
StatBatch = list[tuple[str, str, Stat]]


@dataclass(slots=True)
class _Entry:
    stats: RequestStats
    first_adjust: int = 1
    refs: int = 0


class ConcurrencyReporter:
    """Request in/out events per revision → pokes and periodic reports. Not thread-safe."""

    __slots__ = ("_entries", "pod_name")

    def __init__(self, pod_name: str) -> None:
        self.pod_name = pod_name
        self._entries: dict[RevisionKey, _Entry] = {}

    def request_in(self, key: RevisionKey, now: float) -> StatBatch | None:
        """Count an arrival; returns the poke batch when the revision had no entry."""
        entry = self._entries.get(key)
        poke: StatBatch | None = None
        if entry is None:
            entry = self._entries[key] = _Entry(RequestStats(now))
            poke = [
                (
                    key[0],
                    key[1],
                    Stat(
                        pod_name=self.pod_name,
                        average_concurrent_requests=1.0,
                        request_count=1.0,
                    ),
                )
            ]
        entry.refs += 1
        entry.stats.req_in(now, False)
        return poke

    def request_out(self, key: RevisionKey, now: float) -> None:
        """Count a departure of a request whose ``request_in`` was counted."""
        entry = self._entries.get(key)
        if entry is None:
            return  # cannot happen while refs > 0; defensive for callers' bugs
        entry.refs -= 1
        entry.stats.req_out(now, False)

    def report(self, now: float) -> StatBatch:
        """Close the period for every revision; idle entries are dropped afterwards."""
        batch: StatBatch = []
        for key, entry in list(self._entries.items()):
            rep = entry.stats.report(now)
            adjust = entry.first_adjust
            entry.first_adjust = 0
            batch.append(
                (
                    key[0],
                    key[1],
                    Stat(
                        pod_name=self.pod_name,
                        average_concurrent_requests=max(0.0, rep.average_concurrency - adjust),
                        request_count=rep.request_count - adjust,
                    ),
                )
            )
            if rep.average_concurrency == 0 and entry.refs == 0:
                del self._entries[key]
        return batch

    def concurrency(self, key: RevisionKey) -> int:
        entry = self._entries.get(key)
        return entry.stats.concurrency if entry is not None else 0

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"ConcurrencyReporter(revisions={len(self._entries)}, pod_name={self.pod_name!r})"
