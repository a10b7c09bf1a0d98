"""Queue-proxy configuration from Knative's environment (reference §1.2)."""

from __future__ import annotations

import dataclasses

import pytest

from queueproxy.config import (
    BreakerSettings,
    Config,
    ConfigError,
    load_config,
    parse_go_bool,
    parse_go_int,
)
from queueproxy.readiness import ProbeSpec, TcpSocketAction

REQUIRED = [
    "SERVING_NAMESPACE",
    "SERVING_CONFIGURATION",
    "SERVING_REVISION",
    "SERVING_POD",
    "SERVING_POD_IP",
    "QUEUE_SERVING_PORT",
    "QUEUE_SERVING_TLS_PORT",
    "USER_PORT",
    "CONTAINER_CONCURRENCY",
    "REVISION_TIMEOUT_SECONDS",
    "SERVING_LOGGING_CONFIG",
    "SERVING_LOGGING_LEVEL",
]


def knative_env(**overrides: str) -> dict[str, str]:
    """What Knative's controller sets on the sidecar (values from a real pod)."""
    env = {
        "SERVING_NAMESPACE": "default",
        "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "QUEUE_SERVING_PORT": "8012",
        "QUEUE_SERVING_TLS_PORT": "8112",
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "0",
        "REVISION_IDLE_TIMEOUT_SECONDS": "0",
        "SERVING_POD": "hello-00001-deployment-77c7d84b98-gjwlr",
        "SERVING_POD_IP": "10.0.0.7",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "SERVING_REQUEST_LOG_TEMPLATE": '{"status": {{.Response.Code}}}',
        "SERVING_ENABLE_REQUEST_LOG": "false",
        "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
        "TRACING_CONFIG_BACKEND": "none",
        "TRACING_CONFIG_ZIPKIN_ENDPOINT": "",
        "TRACING_CONFIG_DEBUG": "false",
        "TRACING_CONFIG_SAMPLE_RATE": "0.1",
        "USER_PORT": "8080",
        "SYSTEM_NAMESPACE": "knative-serving",
        "METRICS_DOMAIN": "knative.dev/internal/serving",
        "SERVING_READINESS_PROBE": (
            '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}'
        ),
        "ENABLE_PROFILING": "false",
        "SERVING_ENABLE_PROBE_REQUEST_LOG": "false",
        "METRICS_COLLECTOR_ADDRESS": "",
        "HOST_IP": "10.0.0.1",
        "ENABLE_HTTP2_AUTO_DETECTION": "false",
        "ROOT_CA": "",
    }
    env.update(overrides)
    return env


def minimal_env() -> dict[str, str]:
    env = knative_env()
    return {k: env[k] for k in REQUIRED}


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(env)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_knative_environment_loads() -> None:
    cfg = load_config(knative_env())
    assert cfg.namespace == "default"
    assert cfg.service == "hello"
    assert cfg.configuration == "hello"
    assert cfg.revision == "hello-00001"
    assert cfg.pod_name == "hello-00001-deployment-77c7d84b98-gjwlr"
    assert cfg.pod_ip == "10.0.0.7"
    assert (cfg.serving_port, cfg.tls_port, cfg.user_port) == (8012, 8112, 8080)
    assert cfg.container_concurrency == 0
    assert cfg.revision_timeout_seconds == 300
    assert cfg.response_start_timeout_seconds == 0
    assert cfg.idle_timeout_seconds == 0
    assert cfg.readiness_probe == ProbeSpec(
        tcp_socket=TcpSocketAction("127.0.0.1", 8080), success_threshold=1
    )
    assert cfg.request_log_template == '{"status": {{.Response.Code}}}'
    assert not cfg.enable_request_log
    assert not cfg.enable_probe_request_log
    assert cfg.request_metrics_enabled
    assert not cfg.tracing_enabled
    assert not cfg.enable_http2_auto_detection


def test_sluice_defaults() -> None:
    cfg = load_config(knative_env())
    assert (cfg.admin_port, cfg.stats_port, cfg.metrics_port) == (8022, 9090, 9091)
    assert cfg.drain_quiet_seconds == 30.0
    assert cfg.bind_host == ""
    assert cfg.user_host == "127.0.0.1"


def test_sluice_overrides() -> None:
    cfg = load_config(
        knative_env(
            SLUICE_ADMIN_PORT="18022",
            SLUICE_STATS_PORT="19090",
            SLUICE_METRICS_PORT="19091",
            SLUICE_DRAIN_QUIET_SECONDS="0.2",
            SLUICE_BIND_HOST="127.0.0.1",
            SLUICE_USER_HOST="::1",
        )
    )
    assert (cfg.admin_port, cfg.stats_port, cfg.metrics_port) == (18022, 19090, 19091)
    assert cfg.drain_quiet_seconds == 0.2
    assert cfg.bind_host == "127.0.0.1"
    assert cfg.user_host == "::1"


def test_only_required_variables_suffice() -> None:
    cfg = load_config(minimal_env())
    assert cfg.service == ""
    assert cfg.service_label == "unknown"
    assert cfg.readiness_probe is None
    assert not cfg.request_metrics_enabled
    assert not cfg.tracing_enabled


@pytest.mark.parametrize("var", REQUIRED)
def test_missing_required_variable_names_it(var: str) -> None:
    env = minimal_env()
    del env[var]
    assert error_of(env) == f"required environment variable {var} is not set"


@pytest.mark.parametrize(
    "var",
    ["SERVING_CONFIGURATION", "SERVING_LOGGING_CONFIG", "SERVING_LOGGING_LEVEL", "SERVING_POD"],
)
def test_required_string_may_be_empty(var: str) -> None:
    load_config(knative_env(**{var: ""}))


def test_invalid_integer_message() -> None:
    assert error_of(knative_env(CONTAINER_CONCURRENCY="abc")) == (
        "invalid value for CONTAINER_CONCURRENCY: 'abc' (want an integer >= 0)"
    )


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CONTAINER_CONCURRENCY", "-1"),
        ("CONTAINER_CONCURRENCY", ""),
        ("CONTAINER_CONCURRENCY", " 1"),
        ("REVISION_TIMEOUT_SECONDS", "1.5"),
        ("REVISION_TIMEOUT_SECONDS", "-5"),
        ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "x"),
        ("REVISION_IDLE_TIMEOUT_SECONDS", "08"),
    ],
)
def test_invalid_integers_fail_naming_variable(var: str, value: str) -> None:
    assert error_of(knative_env(**{var: value})).startswith(f"invalid value for {var}: ")


@pytest.mark.parametrize(
    "var",
    [
        "QUEUE_SERVING_PORT",
        "QUEUE_SERVING_TLS_PORT",
        "USER_PORT",
        "SLUICE_ADMIN_PORT",
        "SLUICE_STATS_PORT",
        "SLUICE_METRICS_PORT",
    ],
)
@pytest.mark.parametrize("value", ["0", "65536", "http", "-1"])
def test_ports_must_be_in_range(var: str, value: str) -> None:
    assert error_of(knative_env(**{var: value})) == (
        f"invalid value for {var}: {value!r} (want a port 1..65535)"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("10", 10),
        ("+5", 5),
        ("-7", -7),
        ("0x1f", 31),
        ("0X1F", 31),
        ("010", 8),
        ("0o17", 15),
        ("0b101", 5),
        ("1_000", 1000),
        ("0_17", 15),
    ],
)
def test_parse_go_int_accepts_go_base_zero_syntax(text: str, value: int) -> None:
    assert parse_go_int(text) == value


@pytest.mark.parametrize("text", ["", " 1", "1 ", "08", "1__0", "_1", "1_", "0x", "1e3", "abc"])
def test_parse_go_int_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_int(text)


def test_parse_go_int_rejects_overflow() -> None:
    with pytest.raises(ValueError):
        parse_go_int(str(2**63))
    assert parse_go_int(str(-(2**63))) == -(2**63)


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_go_bool_true(text: str) -> None:
    assert parse_go_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_go_bool_false(text: str) -> None:
    assert parse_go_bool(text) is False


@pytest.mark.parametrize("text", ["yes", "tRuE", "", "2"])
def test_parse_go_bool_rejects_others(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_bool(text)


def test_bools_parse_with_go_semantics() -> None:
    cfg = load_config(
        knative_env(SERVING_ENABLE_REQUEST_LOG="T", SERVING_ENABLE_PROBE_REQUEST_LOG="1")
    )
    assert cfg.enable_request_log and cfg.enable_probe_request_log


def test_invalid_bool_names_variable() -> None:
    assert error_of(knative_env(SERVING_ENABLE_REQUEST_LOG="yes")) == (
        "invalid value for SERVING_ENABLE_REQUEST_LOG: 'yes' (want true or false)"
    )


def test_empty_optional_values_count_as_absent() -> None:
    cfg = load_config(
        knative_env(
            SERVING_ENABLE_REQUEST_LOG="",
            REVISION_IDLE_TIMEOUT_SECONDS="",
            SLUICE_ADMIN_PORT="",
            SLUICE_DRAIN_QUIET_SECONDS="",
        )
    )
    assert not cfg.enable_request_log
    assert cfg.idle_timeout_seconds == 0
    assert cfg.admin_port == 8022
    assert cfg.drain_quiet_seconds == 30.0


@pytest.mark.parametrize("value", ["-1", "abc", "inf", "nan"])
def test_invalid_drain_quiet_period(value: str) -> None:
    assert error_of(knative_env(SLUICE_DRAIN_QUIET_SECONDS=value)).startswith(
        "invalid value for SLUICE_DRAIN_QUIET_SECONDS: "
    )


def test_breaker_disabled_below_one() -> None:
    assert load_config(knative_env(CONTAINER_CONCURRENCY="0")).breaker is None


def test_breaker_sized_from_container_concurrency() -> None:
    cfg = load_config(knative_env(CONTAINER_CONCURRENCY="10"))
    assert cfg.breaker == BreakerSettings(queue_depth=100, max_concurrency=10, initial_capacity=10)


@pytest.mark.parametrize(
    ("backend", "enabled"),
    [("prometheus", True), ("opencensus", False), ("", False), ("Prometheus", True)],
)
def test_request_metrics_enabled_only_for_prometheus(backend: str, enabled: bool) -> None:
    cfg = load_config(knative_env(SERVING_REQUEST_METRICS_BACKEND=backend))
    assert cfg.request_metrics_enabled is enabled


def test_absent_metrics_backend_disables_request_metrics() -> None:
    env = knative_env()
    del env["SERVING_REQUEST_METRICS_BACKEND"]
    assert not load_config(env).request_metrics_enabled


@pytest.mark.parametrize(("backend", "enabled"), [("none", False), ("zipkin", True), ("", False)])
def test_tracing_backend(backend: str, enabled: bool) -> None:
    assert load_config(knative_env(TRACING_CONFIG_BACKEND=backend)).tracing_enabled is enabled


def test_empty_service_label_is_unknown() -> None:
    assert load_config(knative_env(SERVING_SERVICE="")).service_label == "unknown"
    assert load_config(knative_env()).service_label == "hello"


def test_invalid_readiness_probe_is_fatal_and_names_variable() -> None:
    assert error_of(knative_env(SERVING_READINESS_PROBE="{bad")).startswith(
        "invalid value for SERVING_READINESS_PROBE: "
    )


def test_empty_readiness_probe_means_always_ready() -> None:
    assert load_config(knative_env(SERVING_READINESS_PROBE="")).readiness_probe is None


def test_config_is_frozen() -> None:
    cfg = load_config(knative_env())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.user_port = 1  # type: ignore[misc]


def test_direct_construction_is_validated() -> None:
    cfg = load_config(knative_env())
    with pytest.raises(ConfigError, match="USER_PORT"):
        dataclasses.replace(cfg, user_port=0)
    with pytest.raises(ConfigError, match="CONTAINER_CONCURRENCY"):
        dataclasses.replace(cfg, container_concurrency=-1)
    assert isinstance(dataclasses.replace(cfg, user_port=9000), Config)


def test_v1_10_reads_http2_auto_detection_under_its_split_name() -> None:
    # v1.10.2's envconfig read ENABLE_HTT_P2_AUTO_DETECTION, so the variable its controller
    # sets changed nothing there (#14564); the v1.23 contract reads the right name.
    assert not load_config(
        knative_env(ENABLE_HTTP2_AUTO_DETECTION="true")
    ).enable_http2_auto_detection
    assert load_config(knative_env(ENABLE_HTT_P2_AUTO_DETECTION="true")).enable_http2_auto_detection
