"""``kn_serving_*`` request metrics as OpenTelemetry's Prometheus exporter writes them."""

from __future__ import annotations

import pytest

from queueproxy.metrics_otel import LATENCY_BOUNDS_S, OtelRequestMetrics

SCOPE = (
    'otel_scope_name="knative.dev/serving/pkg/queue",otel_scope_schema_url="",otel_scope_version=""'
)


def metrics(**kw: object) -> OtelRequestMetrics:
    args: dict[str, object] = {
        "namespace": "default",
        "service": "hello",
        "configuration": "hello",
        "revision": "hello-00001",
        "pod_name": "hello-00001-deployment-6d9f8b7c5-x2v4q",
        "process_metrics": False,
    }
    args.update(kw)
    return OtelRequestMetrics(**args)  # type: ignore[arg-type]


def lines(m: OtelRequestMetrics) -> list[str]:
    return m.render().decode().splitlines()


def test_nothing_recorded_shows_only_target_info() -> None:
    assert lines(metrics()) == [
        "# HELP target_info Target metadata",
        "# TYPE target_info gauge",
        'target_info{k8s_container_name="queue-proxy",k8s_namespace_name="default",'
        'k8s_pod_name="hello-00001-deployment-6d9f8b7c5-x2v4q",'
        'kn_configuration_name="hello",kn_revision_name="hello-00001",'
        'kn_service_name="hello",service_instance_id="hello-00001-deployment-6d9f8b7c5-x2v4q",'
        'service_name="hello"} 1',
    ]


def test_invocation_duration_histogram_exposition() -> None:
    m = metrics()
    m.record_app_request(200, 0.003)
    m.record_both(200, 0.2, "kn:disabled", 0.1)  # exactly on a bound: counted in it
    m.record_app_request(502, 12.0)
    text = lines(m)
    assert text[:2] == [
        "# HELP kn_serving_invocation_duration_seconds The duration of task execution",
        "# TYPE kn_serving_invocation_duration_seconds histogram",
    ]
    ok = [line for line in text if 'http_response_status_code="200"' in line]
    labels = f'http_response_status_code="200",{SCOPE}'
    les = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5"]
    les += ["5", "7.5", "10", "+Inf"]
    counts = ["1"] * 5 + ["2"] * 10
    assert ok == [
        f'kn_serving_invocation_duration_seconds_bucket{{{labels},le="{le}"}} {n}'
        for le, n in zip(les, counts, strict=True)
    ] + [
        f"kn_serving_invocation_duration_seconds_sum{{{labels}}} 0.10300000000000001",
        f"kn_serving_invocation_duration_seconds_count{{{labels}}} 2",
    ]
    bad = [line for line in text if 'http_response_status_code="502"' in line]
    name, labels = (
        "kn_serving_invocation_duration_seconds",
        f'http_response_status_code="502",{SCOPE}',
    )
    assert bad[-3:] == [
        f'{name}_bucket{{{labels},le="+Inf"}} 1',
        f"{name}_sum{{{labels}}} 12",
        f"{name}_count{{{labels}}} 1",
    ]
    assert bad[-4].endswith('le="10"} 0')
    assert len(LATENCY_BOUNDS_S) == 14


def test_record_request_alone_records_nothing() -> None:
    m = metrics()
    m.record_request(503, 0.01, "kn:disabled")  # refused by a full queue: never reached the app
    assert "kn_serving_invocation" not in m.render().decode()


@pytest.mark.parametrize(("enabled", "shown"), [(True, True), (False, False)])
def test_queue_depth_gauge_only_with_a_breaker(enabled: bool, shown: bool) -> None:
    m = metrics(queue_depth_enabled=enabled)
    m.set_queue_depth(3)
    text = lines(m)
    gauge = [
        "# HELP kn_serving_queue_depth Number of current requests in the queue",
        "# TYPE kn_serving_queue_depth gauge",
        f"kn_serving_queue_depth{{{SCOPE}}} 3",
    ]
    assert (text[:3] == gauge) is shown


def test_families_come_kn_serving_then_process_then_target_info() -> None:
    # Go's registry gathers families in name order.
    m = metrics(process_metrics=True, queue_depth_enabled=True)
    m.record_app_request(200, 0.01)
    m.set_queue_depth(1)
    families = [line.split()[2] for line in lines(m) if line.startswith("# TYPE")]
    assert families[:2] == ["kn_serving_invocation_duration_seconds", "kn_serving_queue_depth"]
    assert families[-1] == "target_info"
    assert all(f.startswith("process_") for f in families[2:-1]) and len(families) > 3


def test_service_name_falls_back_and_empty_names_are_left_out() -> None:
    text = metrics(service="", configuration="").render().decode()
    assert 'service_name="hello-00001"' in text
    assert "kn_service_name" not in text and "kn_configuration_name" not in text


def test_label_values_are_escaped() -> None:
    text = metrics(namespace='we"ird\\ns').render().decode()
    assert 'k8s_namespace_name="we\\"ird\\\\ns"' in text
