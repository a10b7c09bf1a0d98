"""Prometheus helper functions shared by the components."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from proxy.metrics import LATENCY_BUCKETS_MS, new_registry, render, status_class


def test_latency_buckets_are_knatives() -> None:
    assert LATENCY_BUCKETS_MS == (
        5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500,
        600, 700, 800, 900, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
    )  # fmt: skip


def test_new_registry_is_isolated_and_empty_by_default() -> None:
    body, _ = render(new_registry())
    assert body == b""


def test_new_registry_with_process_collector_exports_process_metrics() -> None:
    body, _ = render(new_registry(process=True))
    # The process collector only reports on platforms with /proc; it must not fail elsewhere.
    assert isinstance(body, bytes)


def test_render_uses_prometheus_text_0_0_4_content_type() -> None:
    registry = new_registry()
    counter = Counter(
        "revision_request_count", "requests", ["response_code_class"], registry=registry
    )
    counter.labels(response_code_class=status_class(200)).inc()
    body, content_type = render(registry)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b'revision_request_count_total{response_code_class="2xx"} 1.0' in body


def test_histogram_with_latency_buckets_renders_every_bucket() -> None:
    registry = new_registry()
    hist = Histogram("lat", "latency", buckets=LATENCY_BUCKETS_MS, registry=registry)
    hist.observe(7)
    body, _ = render(registry)
    assert b'lat_bucket{le="5.0"} 0.0' in body
    assert b'lat_bucket{le="10.0"} 1.0' in body
    assert b'lat_bucket{le="100000.0"} 1.0' in body
    assert b'lat_bucket{le="+Inf"} 1.0' in body


def test_status_class_maps_codes_to_classes() -> None:
    assert [status_class(c) for c in (101, 200, 204, 302, 404, 499, 500, 503)] == [
        "1xx",
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "5xx",
        "5xx",
    ]
