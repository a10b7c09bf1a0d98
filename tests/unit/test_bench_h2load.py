"""Pure parts of ``bench.h2load``: h2load's summary and log parsing, ratios to Go, rendering."""

from __future__ import annotations

import pytest

from bench.h2load import (
    FIXED_RATE,
    SATURATION,
    latency_percentiles,
    parse_h2load,
    render_markdown,
    with_go_ratios,
)
from bench.hotpath.loadgen import LoadgenError
from bench.hotpath.report import Run, TargetResult, summarise

H2LOAD_OUT = """starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Application protocol: h2c

finished in 2.00s, 81688.00 req/s, 3.19MB/s
requests: 163376 total, 163408 started, 163376 done, 163370 succeeded, 6 failed, 2 errored, 0 timeout
status codes: 163370 2xx, 0 3xx, 0 4xx, 4 5xx
traffic: 6.39MB (6699020) total, 1.71MB (1797644) headers (space savings 93.71%), 1.87MB (1960512) data
                     min         max         mean         sd        +/- sd
time for request:       46us      8.82ms       279us       429us    96.26%
"""  # noqa: E501


def test_parse_h2load_counts_only_2xx_as_requests_and_failures_once() -> None:
    res = parse_h2load(H2LOAD_OUT)
    assert res.requests == 163370
    assert res.duration_s == 2.0
    assert res.rps == pytest.approx(81685.0)
    assert res.errors == 2 and res.non_2xx == 4  # failed = 4 with a 5xx + 2 with none


def test_parse_h2load_reads_a_run_shorter_than_a_second() -> None:
    res = parse_h2load(H2LOAD_OUT.replace("finished in 2.00s", "finished in 440.66ms"))
    assert res.duration_s == pytest.approx(0.44066)


def test_parse_h2load_rejects_output_without_a_summary() -> None:
    with pytest.raises(LoadgenError, match="no summary"):
        parse_h2load("starting benchmark...\nconnect error\n")


def test_latency_percentiles_use_nearest_rank_over_2xx_rows() -> None:
    rows = [f"1796306074776237\t200\t{us}" for us in range(1000, 101_000, 1000)]
    rows.append("1796306074776237\t503\t999999999")  # refused: not a latency sample
    pct = latency_percentiles("\n".join(rows) + "\n")
    assert pct == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}


def test_latency_percentiles_of_an_empty_log_are_empty() -> None:
    assert latency_percentiles("") == {}


def _result(name: str, sat_cpu: float, rate_cpu: float, p99: float) -> TargetResult:
    def point(cpu: float, lat: float) -> Run:
        return Run(rps=1000.0, requests=5000, duration_s=5.0, cpu_us_per_req=cpu,
                   latency_ms={"p50": lat / 2, "p99": lat})  # fmt: skip

    return TargetResult(
        name, "ok", cpu_of="backend" if name == "direct" else "proxy", idle_rss_kib=25 * 1024,
        points={SATURATION: summarise([point(sat_cpu, p99)]),
                FIXED_RATE: summarise([point(rate_cpu, p99)])},
    )  # fmt: skip


def test_sluice_queue_proxy_is_divided_by_the_go_sidecar_of_the_same_cc() -> None:
    results = with_go_ratios(
        [
            _result("queue-proxy-cc0", 300.0, 500.0, 4.0),
            _result("queue-proxy-cc10", 400.0, 600.0, 5.0),
            _result("go-queue-proxy-cc0", 150.0, 250.0, 3.0),
        ]
    )
    by = {r.name: r for r in results}
    assert by["queue-proxy-cc0"].points[SATURATION].ratio_to_go == pytest.approx(2.0)
    assert by["queue-proxy-cc0"].points[FIXED_RATE].ratio_to_go == pytest.approx(2.0)
    assert by["queue-proxy-cc10"].points[SATURATION].ratio_to_go is None  # no Go twin
    assert by["go-queue-proxy-cc0"].points[SATURATION].ratio_to_go is None


def test_markdown_shows_added_p99_against_direct_and_skips() -> None:
    results = with_go_ratios(
        [
            _result("direct", 4.0, 30.0, 1.0),
            _result("queue-proxy-cc0", 300.0, 500.0, 4.5),
            _result("go-queue-proxy-cc0", 150.0, 250.0, 3.0),
            TargetResult("go-queue-proxy-cc10", "skipped", note="binary missing"),
        ]
    )
    env = {"cpu_count": 2, "pinning": "none", "runs": 1, "duration_s": 2.0}
    md = render_markdown(results, env)
    row = next(line for line in md.splitlines() if line.startswith("| queue-proxy-cc0 "))
    assert "| 300.0 | 2.00 |" in row and "| 4.50 | 3.50 |" in row
    assert "4.0 (backend)" in md
    assert "go-queue-proxy-cc10: skipped: binary missing" in md
