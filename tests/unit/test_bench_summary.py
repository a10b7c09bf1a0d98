"""Pure parts of ``python -m bench``: records, percentiles, series, shares, SLA checks.

No load is generated and no process is started here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.records import Record, parse_hey_csv, read_records, write_records
from bench.summary import (
    added_latency,
    elapsed,
    latency_stats,
    overload_summary,
    percentile,
    pods_summary,
    rate_check,
    request_summary,
    series,
    share_error,
    shares,
    status_counts,
)

HEY_CSV = """\
response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.1024,0.0005,0.0000,0.0001,0.1012,0.0005,200,0.0007
0.1031,0.0002,0.0000,0.0000,0.1021,0.0001,200,0.2015
0.0004,0.0000,0.0000,0.0000,0.0000,0.0000,0,0.4001
"""


def rec(t: float, ms: float, status: int = 200, revision: str = "", error: str = "") -> Record:
    return Record(t=t, latency_ms=ms, status=status, revision=revision, error=error)


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_latency_stats_of_nothing_are_null_not_nan() -> None:
    stats = latency_stats([])
    assert stats["count"] == 0
    assert stats["p99"] is None and stats["max"] is None


def test_latency_stats_of_a_hundred_values() -> None:
    stats = latency_stats(float(x) for x in range(1, 101))
    assert stats["count"] == 100
    assert stats["min"] == 1.0 and stats["max"] == 100.0
    assert stats["p50"] == 50.5
    assert stats["p99"] == pytest.approx(99.01)


def test_record_ok_means_2xx_or_3xx_and_no_error() -> None:
    assert rec(0, 1).ok
    assert rec(0, 1, 302).ok
    assert not rec(0, 1, 503).ok
    assert not rec(0, 1, 0, error="ConnectionRefusedError").ok


def test_status_counts_name_missing_answers_error() -> None:
    records = [rec(0, 1), rec(0, 1), rec(0, 1, 503), rec(0, 1, 0, error="x")]
    assert status_counts(records) == {"200": 2, "503": 1, "error": 1}


def test_shares_count_only_successful_answers_naming_a_revision() -> None:
    records = [rec(0, 1, revision="a")] * 3 + [rec(0, 1, revision="b"), rec(0, 1, 503, "a")]
    assert shares(records) == {"a": 0.75, "b": 0.25}
    assert shares([rec(0, 1)]) == {}


def test_share_error_is_the_largest_gap_including_missing_revisions() -> None:
    assert share_error({"a": 0.52, "b": 0.48}, {"a": 0.5, "b": 0.5}) == 0.02
    assert share_error({"a": 1.0}, {"a": 0.9, "b": 0.1}) == 0.1


def test_series_buckets_by_second_from_t0() -> None:
    records = [
        rec(100.1, 10, revision="a"),
        rec(100.5, 30, revision="b"),
        rec(102.2, 20, 503),
    ]
    buckets = series(records, t0=100.0)
    assert [b.t for b in buckets] == [0.0, 1.0, 2.0]
    assert [b.count for b in buckets] == [2, 0, 1]
    assert buckets[0].p50 == 20.0 and buckets[0].shares == {"a": 0.5, "b": 0.5}
    assert buckets[1].p50 is None  # an empty second stays in the series as a gap
    assert buckets[2].errors == 1 and buckets[2].p50 is None
    assert series(records, t0=100.0, ok_only=False)[2].p50 == 20.0


def test_request_summary_counts_failures_and_rate() -> None:
    records = [rec(0.0, 10), rec(0.5, 20), rec(1.0, 30, 502)]
    s = request_summary(records)
    assert (s["requests"], s["ok"], s["failures"]) == (3, 2, 1)
    assert s["rps"] == 3.0
    assert s["latency_ms"]["max"] == 20.0


def test_overload_summary_separates_rejects_from_accepted() -> None:
    records = [rec(0.0, 50)] * 2 + [rec(0.5, 1, 503)] * 6 + [rec(1.0, 5, 0, error="reset")]
    s = overload_summary(records)
    assert (s["accepted"], s["rejected_503"], s["other_failures"]) == (2, 6, 1)
    assert s["reject_share"] == round(6 / 9, 4)
    assert s["reject_latency_ms"]["p50"] == 1.0
    assert s["accepted_latency_ms"]["p50"] == 50.0


def test_added_latency_subtracts_the_baseline() -> None:
    hops: dict[str, dict[str, float | None]] = {
        "direct": {"p50": 100.0, "p95": 104.0, "p99": 110.0},
        "queue-proxy": {"p50": 101.5, "p95": 106.0, "p99": None},
    }
    assert added_latency(hops, "direct") == {"queue-proxy": {"p50": 1.5, "p95": 2.0, "p99": None}}


@pytest.mark.parametrize(
    ("requests", "seconds", "within"),
    [(2000, 10.0, True), (1990, 10.0, True), (1970, 10.0, False), (2100, 10.0, False)],
)
def test_rate_check_holds_within_one_percent(requests: int, seconds: float, within: bool) -> None:
    assert rate_check(requests, seconds, 200.0)["within"] is within


def test_elapsed_runs_to_the_end_of_the_last_answer() -> None:
    assert elapsed([rec(10.0, 100), rec(11.0, 500)]) == pytest.approx(1.5)
    assert elapsed([]) == 0.0


def test_pods_summary_keeps_maxima_and_pod_names() -> None:
    samples = [
        {"revision": "r", "desired": 1, "actual": 1, "ready": 0, "pods": ["p1"]},
        {"revision": "r", "desired": 3, "actual": 2, "ready": 2, "pods": ["p1", "p2"]},
    ]
    assert pods_summary(samples) == {
        "r": {"max_desired": 3, "max_actual": 2, "max_ready": 2, "pods": ["p1", "p2"]}
    }


def test_hey_csv_becomes_records_with_absolute_times() -> None:
    records = parse_hey_csv(HEY_CSV, started_at=1000.0, name="probe")
    assert [r.t for r in records] == [1000.0007, 1000.2015, 1000.4001]
    assert records[0].latency_ms == pytest.approx(102.4)
    assert records[0].ok and records[0].name == "probe"
    assert records[2].status == 0 and not records[2].ok


def test_records_round_trip_through_csv(tmp_path: Path) -> None:
    records = [
        Record(2.0, 1.5, 200, "hello-v1", "vm-1", "", "GET /"),
        Record(1.0, 3.25, 503, "", "", "", "GET /"),
    ]
    write_records(tmp_path / "a.csv", records)
    assert read_records([tmp_path / "a.csv"]) == sorted(records, key=lambda r: r.t)
