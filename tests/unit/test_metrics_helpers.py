"""proxy.dataplane.promtext: hand-written exposition that Prometheus's own parser accepts."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.dataplane.promtext import (
    CONTENT_TYPE,
    LATENCY_BUCKETS_MS,
    Series,
    format_go_float,
    labels,
    render_counter,
    render_histogram,
    status_class,
)


def test_latency_buckets_are_knatives_in_milliseconds() -> None:
    assert LATENCY_BUCKETS_MS[0] == 5
    assert LATENCY_BUCKETS_MS[-1] == 100000
    assert list(LATENCY_BUCKETS_MS) == sorted(LATENCY_BUCKETS_MS)
    assert len(LATENCY_BUCKETS_MS) == 26


def test_status_class_is_the_hundreds_digit() -> None:
    assert [status_class(c) for c in (101, 200, 302, 404, 503)] == [
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
    ]


def test_labels_are_sorted_and_escaped() -> None:
    assert labels({"b": 'x"y', "a": "1\\2\n"}) == 'a="1\\\\2\\n",b="x\\"y"'


def test_go_number_formatting() -> None:
    assert format_go_float(5.0) == "5"
    assert format_go_float(1e6) == "1e+06"
    assert format_go_float(0.25) == "0.25"


def test_rendered_families_parse_with_prometheus_parser() -> None:
    series = Series(labels({"pod_name": "p", "response_code": "200"}))
    for ms in (3, 5, 7, 250, 200000):
        series.observe(ms)
    out: list[str] = []
    render_counter(out, "x_request_count", "Requests", [series])
    render_histogram(out, "x_request_latencies", "Latency (ms)", [series])
    text = "".join(out)
    # Written without a _total suffix, as Knative's exporter writes it (the parser reading it
    # back normalises the sample name, which is why the raw line is checked).
    assert 'x_request_count{pod_name="p",response_code="200"} 5\n' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["x_request_count"].samples[0].value == 5
    buckets = {
        s.labels["le"]: s.value
        for s in families["x_request_latencies"].samples
        if s.name.endswith("_bucket")
    }
    # Knative's buckets are "less than": 5 ms lands in le=10, not le=5.
    assert buckets["5"] == 1
    assert buckets["10"] == 3
    assert buckets["+Inf"] == 5
    assert "0.0.4" in CONTENT_TYPE
