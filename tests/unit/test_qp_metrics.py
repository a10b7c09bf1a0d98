"""Prometheus request metrics (reference §1.15, §5.3): names, labels, exposition."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from queueproxy.metrics import (
    LATENCY_BUCKETS_MS,
    MAX_ROUTE_TAGS,
    RequestMetrics,
    format_go_float,
    route_tag,
)

REQ_LABELS = (
    'configuration_name="cfg",container_name="queue-proxy",namespace_name="ns",'
    'pod_name="pod-1",response_code="200",response_code_class="2xx",revision_name="rev",'
    'route_tag="DISABLED",service_name="svc"'
)
APP_LABELS = (
    'configuration_name="cfg",container_name="queue-proxy",namespace_name="ns",'
    'pod_name="pod-1",response_code="200",response_code_class="2xx",revision_name="rev",'
    'service_name="svc"'
)


def make(**kw: object) -> RequestMetrics:
    args: dict[str, object] = {
        "namespace": "ns",
        "service": "svc",
        "configuration": "cfg",
        "revision": "rev",
        "pod_name": "pod-1",
        "process_metrics": False,
    }
    args.update(kw)
    return RequestMetrics(**args)  # type: ignore[arg-type]


def lines(m: RequestMetrics) -> list[str]:
    return m.render().decode().splitlines()


@pytest.mark.parametrize("pod", ["pöd", "pod\x00", "pod\n", "p" * 256])
def test_invalid_pod_name_fails_construction(pod: str) -> None:
    with pytest.raises(ValueError, match="pod name"):
        make(pod_name=pod)


def test_one_request_gives_count_one_and_one_latency_sample() -> None:
    m = make()
    m.record_request(200, 0.012, "DISABLED")
    out = lines(m)
    assert f"revision_request_count{{{REQ_LABELS}}} 1" in out
    assert "# TYPE revision_request_count counter" in out
    assert "# TYPE revision_request_latencies histogram" in out
    assert f"revision_request_latencies_count{{{REQ_LABELS}}} 1" in out
    assert f"revision_request_latencies_sum{{{REQ_LABELS}}} 12" in out
    assert f'revision_request_latencies_bucket{{{REQ_LABELS},le="10"}} 0' in out
    assert f'revision_request_latencies_bucket{{{REQ_LABELS},le="20"}} 1' in out
    assert f'revision_request_latencies_bucket{{{REQ_LABELS},le="+Inf"}} 1' in out


def test_counters_have_no_total_suffix() -> None:
    m = make()
    m.record_request(200, 0.001, "DISABLED")
    m.record_app_request(200, 0.001)
    text = m.render().decode()
    assert "revision_request_count_total" not in text
    assert "revision_app_request_count_total" not in text
    assert "_created" not in text


def test_nothing_recorded_renders_no_revision_series() -> None:
    assert "revision_" not in make().render().decode()


def test_latency_is_truncated_to_whole_ms_and_bounds_are_half_open() -> None:
    m = make()
    m.record_request(200, 0.0059, "DISABLED")  # 5.9 ms -> 5 ms -> bucket [5, 10)
    out = lines(m)
    assert f"revision_request_latencies_sum{{{REQ_LABELS}}} 5" in out
    assert f'revision_request_latencies_bucket{{{REQ_LABELS},le="5"}} 0' in out
    assert f'revision_request_latencies_bucket{{{REQ_LABELS},le="10"}} 1' in out


def test_histogram_lists_every_knative_bucket_in_order() -> None:
    m = make()
    m.record_request(200, 200.0, "DISABLED")
    les = [
        line.split('le="')[1].split('"')[0]
        for line in lines(m)
        if line.startswith("revision_request_latencies_bucket")
    ]
    assert les == [str(b) for b in LATENCY_BUCKETS_MS] + ["+Inf"]
    assert f'revision_request_latencies_bucket{{{REQ_LABELS},le="100000"}} 0' in lines(m)
    assert f"revision_request_latencies_sum{{{REQ_LABELS}}} 200000" in lines(m)


def test_status_classes_and_separate_series_per_code() -> None:
    m = make()
    m.record_request(503, 0.0, "DISABLED")
    m.record_request(504, 0.0, "DISABLED")
    m.record_request(504, 0.0, "DISABLED")
    text = m.render().decode()
    assert 'response_code="503",response_code_class="5xx"' in text
    assert text.count("revision_request_count{") == 2
    assert 'response_code="504",response_code_class="5xx",revision_name="rev",' in text


def test_empty_service_becomes_unknown() -> None:
    m = make(service="")
    m.record_request(200, 0.0, "DISABLED")
    assert 'service_name="unknown"' in m.render().decode()


def test_app_request_metrics_have_no_route_tag() -> None:
    m = make()
    m.record_app_request(200, 0.05)
    out = lines(m)
    assert f"revision_app_request_count{{{APP_LABELS}}} 1" in out
    assert f"revision_app_request_latencies_count{{{APP_LABELS}}} 1" in out
    assert "route_tag" not in m.render().decode()
    assert "revision_request_count{" not in m.render().decode()


def test_route_tag_is_a_label_of_request_metrics() -> None:
    m = make()
    m.record_request(200, 0.0, "blue")
    assert 'route_tag="blue"' in m.render().decode()


def test_route_tags_beyond_the_cap_fold_into_undefined() -> None:
    m = make()
    for i in range(MAX_ROUTE_TAGS + 5):
        m.record_request(200, 0.0, f"t{i}")
    text = m.render().decode()
    assert text.count("revision_request_count{") == MAX_ROUTE_TAGS + 1
    assert 'route_tag="UNDEFINED",service_name="svc"} 5' in text


@pytest.mark.parametrize(
    ("tag", "default", "expected"),
    [
        (None, None, "DISABLED"),
        ("", "", "DISABLED"),
        (None, "true", "DEFAULT"),
        (None, "false", "DEFAULT"),
        ("blue", None, "blue"),
        ("blue", "true", "UNDEFINED"),
        ("blue", "false", "blue"),
    ],
)
def test_route_tag_mapping(tag: str | None, default: str | None, expected: str) -> None:
    assert route_tag(tag, default) == expected


def test_queue_depth_absent_without_breaker() -> None:
    m = make(queue_depth_enabled=False)
    m.set_queue_depth(3)
    assert "revision_queue_depth" not in m.render().decode()


def test_queue_depth_gauge_has_empty_code_labels() -> None:
    m = make(queue_depth_enabled=True)
    assert "revision_queue_depth" not in m.render().decode()
    m.set_queue_depth(7)
    assert (
        'revision_queue_depth{configuration_name="cfg",container_name="queue-proxy",'
        'namespace_name="ns",pod_name="pod-1",response_code="",response_code_class="",'
        'revision_name="rev",service_name="svc"} 7'
    ) in lines(m)
    assert "# TYPE revision_queue_depth gauge" in lines(m)


def test_label_values_are_escaped() -> None:
    m = make(revision='r"e\\v')
    m.record_request(200, 0.0, "DISABLED")
    assert 'revision_name="r\\"e\\\\v"' in m.render().decode()


def test_exposition_parses_as_prometheus_text() -> None:
    m = make(queue_depth_enabled=True, process_metrics=True)
    m.record_request(200, 0.3, "DISABLED")
    m.record_app_request(500, 1.2)
    m.set_queue_depth(2)
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert families["revision_request_latencies"].type == "histogram"
    assert families["revision_queue_depth"].type == "gauge"
    assert any(name.startswith("process_") for name in families)


def test_process_metrics_are_included_by_default() -> None:
    assert b"process_cpu_seconds_total" in make(process_metrics=True).render()


@pytest.mark.parametrize(
    ("value", "threshold", "expected"),
    [
        (0.0, 6, "0"),
        (1.0, 6, "1"),
        (100000.0, 6, "100000"),
        (1000000.0, 6, "1e+06"),
        (1234567.0, 6, "1.234567e+06"),
        (0.5, 6, "0.5"),
        (0.0001, 6, "0.0001"),
        (0.00001, 6, "1e-05"),
        (123.25, 6, "123.25"),
        (-2.5, 6, "-2.5"),
        (1000000.0, 21, "1000000"),
        (0.000015, 21, "1.5e-05"),
        (0.123456789, 21, "0.123456789"),
        (float("inf"), 6, "+Inf"),
        (float("nan"), 6, "NaN"),
        # repr's own exponent forms, both ways round (Go: strconv 'g', -1, 64).
        (1e21, 21, "1e+21"),
        (123456789012345680000.0, 21, "123456789012345680000"),
        (1.5e16, 6, "1.5e+16"),
        (5e-324, 6, "5e-324"),
        (1.7976931348623157e308, 21, "1.7976931348623157e+308"),
        (0.30000000000000004, 6, "0.30000000000000004"),
        (-0.00012, 6, "-0.00012"),
        (120.0, 6, "120"),
        (-0.0, 6, "-0"),
    ],
)
def test_format_go_float(value: float, threshold: int, expected: str) -> None:
    assert format_go_float(value, threshold) == expected


def test_record_both_equals_the_two_separate_records() -> None:
    both, apart = make(), make()
    both.record_both(200, 0.120, "DISABLED", 0.120)
    apart.record_request(200, 0.120, "DISABLED")
    apart.record_app_request(200, 0.120)
    both.record_both(503, 0.700, "blue", 0.004)  # queued 696 ms before the app saw it
    apart.record_request(503, 0.700, "blue")
    apart.record_app_request(503, 0.004)
    assert both.render() == apart.render()
