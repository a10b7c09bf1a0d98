"""Time-weighted request stats (Knative ``request.go`` averaging)."""

from __future__ import annotations

import pytest

from proxy.dataplane.concurrency import RequestStats, StatsReport


def test_two_half_second_requests_in_one_second_average_to_one() -> None:
    stats = RequestStats(start=0.0)
    stats.req_in(0.0, proxied=False)
    stats.req_in(0.0, proxied=False)
    stats.req_out(0.5, proxied=False)
    stats.req_out(0.5, proxied=False)
    report = stats.report(1.0)
    assert report == StatsReport(
        average_concurrency=1.0,
        average_proxied_concurrency=0.0,
        request_count=2.0,
        proxied_request_count=0.0,
    )


def test_sequential_half_second_requests_average_to_one() -> None:
    stats = RequestStats(start=10.0)
    stats.req_in(10.0, proxied=False)
    stats.req_out(10.5, proxied=False)
    stats.req_in(10.5, proxied=False)
    stats.req_out(11.0, proxied=False)
    assert stats.report(11.0).average_concurrency == pytest.approx(1.0)


def test_report_with_no_elapsed_time_gives_zero_averages() -> None:
    stats = RequestStats(start=5.0)
    stats.req_in(5.0, proxied=True)
    report = stats.report(5.0)
    assert report.average_concurrency == 0.0
    assert report.average_proxied_concurrency == 0.0
    assert report.request_count == 1.0
    assert report.proxied_request_count == 1.0


def test_proxied_requests_count_in_both_totals() -> None:
    stats = RequestStats(start=0.0)
    stats.req_in(0.0, proxied=True)
    stats.req_in(0.0, proxied=False)
    stats.req_out(1.0, proxied=True)
    stats.req_out(1.0, proxied=False)
    report = stats.report(2.0)
    assert report.average_concurrency == pytest.approx(1.0)  # 2 for 1 s, 0 for 1 s
    assert report.average_proxied_concurrency == pytest.approx(0.5)
    assert report.request_count == 2.0
    assert report.proxied_request_count == 1.0


def test_report_resets_window_but_keeps_current_concurrency() -> None:
    stats = RequestStats(start=0.0)
    stats.req_in(0.0, proxied=True)
    first = stats.report(1.0)
    assert first.average_concurrency == pytest.approx(1.0)
    assert first.request_count == 1.0
    second = stats.report(2.0)  # still in flight, no new arrivals
    assert second.average_concurrency == pytest.approx(1.0)
    assert second.average_proxied_concurrency == pytest.approx(1.0)
    assert second.request_count == 0.0
    assert second.proxied_request_count == 0.0
    assert stats.concurrency == 1


def test_idle_window_averages_to_zero() -> None:
    stats = RequestStats(start=0.0)
    assert stats.report(1.0) == StatsReport(0.0, 0.0, 0.0, 0.0)


def test_averages_are_time_weighted_over_the_window() -> None:
    stats = RequestStats(start=0.0)
    stats.req_in(0.25, proxied=False)  # 0 for 0.25 s
    stats.req_in(0.5, proxied=False)  # 1 for 0.25 s, then 2 for 0.5 s
    report = stats.report(1.0)
    assert report.average_concurrency == pytest.approx((0.25 * 1 + 0.5 * 2) / 1.0)


def test_negative_time_gap_is_ignored() -> None:
    stats = RequestStats(start=0.0)
    stats.req_in(1.0, proxied=False)
    stats.req_in(0.5, proxied=False)  # stamped out of order: adds no time
    report = stats.report(2.0)
    # 0 for 1 s, then 2 for 1 s; the late event did not move the reference point back.
    assert report.average_concurrency == pytest.approx(1.0)
    assert report.request_count == 2.0
