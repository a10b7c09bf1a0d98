"""``OBSERVABILITY_CONFIG`` (Knative 1.19+): decoding, defaults, and one-line errors."""

from __future__ import annotations

import io

import pytest

from queueproxy.config import ConfigError, load_config
from queueproxy.observability import (
    DEFAULT_REQUEST_LOG_TEMPLATE,
    MetricsSettings,
    Observability,
    RuntimeSettings,
    TracingSettings,
    not_implemented,
    parse_observability,
)
from queueproxy.requestlog import RequestLogEntry, RequestLogger, RevisionInfo
from tests.unit.knative_envs import observability_json, v123_env

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def error_of(value: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(v123_env(OBSERVABILITY_CONFIG=value))
    text = str(err.value)
    assert "\n" not in text
    return text


def test_controller_default_decodes_to_knative_defaults() -> None:
    assert parse_observability(observability_json()) == Observability()


@pytest.mark.parametrize("text", ["", "null", "{}"])
def test_empty_values_mean_the_defaults(text: str) -> None:
    obs = parse_observability(text)
    assert obs.request_metrics.protocol == "none" and obs.prometheus_port is None
    assert obs.request_log_template == DEFAULT_REQUEST_LOG_TEMPLATE
    assert obs.runtime == RuntimeSettings(profiling="disabled", export_interval_ns=15_000_000_000)


def test_full_document_decodes() -> None:
    obs = parse_observability(
        '{"tracing":{"protocol":"grpc","endpoint":"http://otel:4317","samplingRate":0.5},'
        '"metrics":{"protocol":"http/protobuf","endpoint":"http://otel:4318",'
        '"exportInterval":30000000000},"runtime":{"profiling":"enabled"},'
        '"requestMetrics":{"protocol":"prometheus","endpoint":":9095"},'
        '"enableRequestLog":true,"requestLogTemplate":"{{.Request.Method}}",'
        '"enableProbeRequestLog":true,"EnableVarLogCollection":true,'
        '"LoggingURLTemplate":"x","somethingNew":{"ignored":[1]}}'
    )
    assert obs.tracing == TracingSettings("grpc", "http://otel:4317", 0.5)
    assert obs.metrics == MetricsSettings("http/protobuf", "http://otel:4318", 30_000_000_000)
    assert obs.runtime.profiling == "enabled"
    assert obs.request_metrics == MetricsSettings("prometheus", ":9095")
    assert obs.prometheus_port == 9095
    assert obs.enable_request_log and obs.enable_probe_request_log
    assert obs.request_log_template == "{{.Request.Method}}"


def test_keys_match_case_insensitively_like_go() -> None:
    obs = parse_observability('{"RequestMetrics":{"PROTOCOL":"prometheus"}}')
    assert obs.prometheus_port == 9091


def test_a_nested_object_merges_into_the_defaults() -> None:
    obs = parse_observability('{"runtime":{"profiling":"enabled"}}')
    assert obs.runtime.export_interval_ns == 15_000_000_000


def test_v123_config_takes_log_and_tracing_from_it() -> None:
    cfg = load_config(
        v123_env(
            OBSERVABILITY_CONFIG=observability_json(
                request_metrics="prometheus", request_log=True, tracing="stdout"
            )
        )
    )
    assert cfg.request_metrics_enabled and cfg.metrics_port == 9091
    assert cfg.enable_request_log and cfg.request_log_template == DEFAULT_REQUEST_LOG_TEMPLATE
    assert cfg.tracing_enabled


def test_prometheus_endpoint_port_is_used_unless_sluice_overrides_it() -> None:
    value = '{"requestMetrics":{"protocol":"prometheus","endpoint":"0.0.0.0:9095"}}'
    assert load_config(v123_env(OBSERVABILITY_CONFIG=value)).metrics_port == 9095
    env = v123_env(OBSERVABILITY_CONFIG=value, SLUICE_METRICS_PORT="19091")
    assert load_config(env).metrics_port == 19091


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_push_is_accepted_but_serves_no_prometheus_metrics(protocol: str) -> None:
    value = f'{{"requestMetrics":{{"protocol":"{protocol}","endpoint":"http://c:4317"}}}}'
    assert not load_config(v123_env(OBSERVABILITY_CONFIG=value)).request_metrics_enabled


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{", "not valid JSON"),
        ('{"tracing":{"protocol":"none"}', "not valid JSON"),
        ("[]", "the value must be a JSON object"),
        ('"prometheus"', "the value must be a JSON object"),
        ('{"requestMetrics":"prometheus"}', "requestMetrics must be a JSON object"),
        ('{"requestMetrics":{"protocol":1}}', "requestMetrics.protocol must be a string"),
        (
            '{"requestMetrics":{"protocol":"opencensus"}}',
            "requestMetrics.protocol: unsupported protocol 'opencensus'",
        ),
        ('{"metrics":{"protocol":"zipkin"}}', "metrics.protocol: unsupported protocol"),
        ('{"tracing":{"protocol":"zipkin"}}', "tracing.protocol: unsupported protocol 'zipkin'"),
        ('{"tracing":{"samplingRate":"0.1"}}', "tracing.samplingRate must be a number"),
        ('{"runtime":{"exportInterval":"15s"}}', "runtime.exportInterval must be an integer"),
        ('{"runtime":{"exportInterval":1.5}}', "runtime.exportInterval must be an integer"),
        ('{"enableRequestLog":"true"}', "enableRequestLog must be true or false"),
        ('{"requestLogTemplate":7}', "requestLogTemplate must be a string"),
        ('{"EnableVarLogCollection":1}', "EnableVarLogCollection must be true or false"),
        (
            '{"requestMetrics":{"protocol":"prometheus","endpoint":"9091"}}',
            "requestMetrics.endpoint: '9091' is not host:port",
        ),
        (
            '{"requestMetrics":{"protocol":"prometheus","endpoint":":80"}}',
            "requestMetrics.endpoint: port '80' is not a number 1024..65535",
        ),
    ],
)
def test_malformed_observability_config_fails_with_one_line_naming_it(
    value: str, message: str
) -> None:
    text = error_of(value)
    assert text.startswith("invalid value for OBSERVABILITY_CONFIG: ")
    assert message in text


def test_default_template_logs_the_w3c_trace_id() -> None:
    out = io.StringIO()
    logger = RequestLogger(DEFAULT_REQUEST_LOG_TEMPLATE, RevisionInfo(pod_ip="10.0.0.7"), out)
    logger.log(
        RequestLogEntry(
            method="GET", request_uri="/", headers=[(b"traceparent", TRACEPARENT.encode())]
        )
    )
    logger.log(RequestLogEntry(method="GET", request_uri="/", headers=[(b"x-b3-traceid", b"b3id")]))
    logger.log(RequestLogEntry(method="GET", request_uri="/"))
    lines = out.getvalue().splitlines()
    assert [line.rsplit('"traceId": ', 1)[1] for line in lines] == [
        '"4bf92f3577b34da6a3ce929d0e0e4736"}',
        '"b3id"}',
        '""}',
    ]
    assert '"serverIp": "10.0.0.7"' in lines[0]


def test_settings_sluice_does_not_act_on_are_named_at_start_up() -> None:
    assert not_implemented(parse_observability(observability_json())) == []
    obs = parse_observability(
        '{"requestMetrics":{"protocol":"grpc","endpoint":"http://c:4317"},'
        '"tracing":{"protocol":"stdout"},"runtime":{"profiling":"enabled"}}'
    )
    notes = not_implemented(obs)
    assert [n.split(":")[0] for n in notes] == [
        "OBSERVABILITY_CONFIG requestMetrics.protocol 'grpc'",
        "OBSERVABILITY_CONFIG tracing.protocol 'stdout'",
        "OBSERVABILITY_CONFIG runtime.profiling 'enabled'",
    ]
