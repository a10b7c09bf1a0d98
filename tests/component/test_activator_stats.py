"""The concurrency reporter: pokes and periodic reports (reference §2.9, §5.12 TestStats)."""

from __future__ import annotations

import pytest

from activator.stats import ConcurrencyReporter
from proxy.dataplane.autoscaler_stat_pb import Stat

A = ("ns", "a")
B = ("ns", "b")


def stat(avg: float, count: float) -> Stat:
    return Stat(pod_name="act", average_concurrent_requests=avg, request_count=count)


def test_first_request_pokes_at_once_with_one_and_one() -> None:
    r = ConcurrencyReporter("act")
    assert r.request_in(A, 0.0) == [("ns", "a", stat(1, 1))]
    assert r.request_in(A, 0.1) is None  # an entry exists: no second poke


def test_first_report_discounts_the_poke() -> None:
    r = ConcurrencyReporter("act")
    r.request_in(A, 0.0)
    # One request in flight for the whole second: raw avg 1, count 1 → reported 0 and 0.
    assert r.report(1.0) == [("ns", "a", stat(0, 0))]
    # Later reports are not discounted.
    assert r.report(2.0) == [("ns", "a", stat(1, 0))]


def test_idle_period_reports_zero_then_deletes_so_next_request_pokes_again() -> None:
    r = ConcurrencyReporter("act")
    r.request_in(A, 0.0)
    r.request_out(A, 0.5)
    assert r.report(1.0) == [("ns", "a", stat(0, 0))]  # raw avg 0.5 - 1 → clamped at 0
    assert r.report(2.0) == [("ns", "a", stat(0, 0))]  # raw avg 0: deleted after this
    assert A not in r
    assert r.report(3.0) == []
    assert r.request_in(A, 3.5) is not None


def test_several_revisions_share_one_batch() -> None:
    r = ConcurrencyReporter("act")
    r.request_in(A, 0.0)
    r.request_in(B, 0.0)
    batch = r.report(1.0)
    assert {(ns, name) for ns, name, _ in batch} == {A, B}


def test_interleaved_requests_give_time_weighted_half() -> None:
    r = ConcurrencyReporter("act")
    r.request_in(A, 0.0)
    r.report(0.0)  # discard the poke-adjusted first period
    r.request_out(A, 0.5)
    r.request_in(A, 1.0)
    r.request_out(A, 1.5)
    ((_, _, s),) = r.report(2.0)
    assert s.average_concurrent_requests == pytest.approx(0.5)
    assert s.request_count == 1


def test_entry_held_by_an_in_flight_request_is_not_deleted() -> None:
    r = ConcurrencyReporter("act")
    r.request_in(A, 0.0)
    r.request_out(A, 1.0)
    r.report(1.0)  # raw average 1: kept
    # A request arrives exactly at the next report: the period's raw average is 0, but the
    # entry is held by that request, so it survives and no new poke is due.
    assert r.request_in(A, 2.0) is None
    r.report(2.0)
    assert A in r
    r.request_out(A, 2.5)
    assert r.concurrency(A) == 0
