"""The queue-proxy under both controllers' environments: v1.23.0 and v1.10.2 (issue 17)."""

from __future__ import annotations

import pytest

from queueproxy.config import (
    CONTRACT_V1_10,
    CONTRACT_V1_23,
    ConfigError,
    contract_of,
    load_config,
)
from queueproxy.observability import DEFAULT_REQUEST_LOG_TEMPLATE
from queueproxy.readiness import GrpcAction, HttpGetAction, ProbeSpec, TcpSocketAction
from queueproxy.tlsconfig import LEGACY, TlsSettings
from tests.unit.knative_envs import (
    V123_REQUEST_LOG_TEMPLATE,
    v123_env,
    v123_multi_probe_env,
    v1102_env,
)

DEFAULT_TCP = ProbeSpec(
    tcp_socket=TcpSocketAction(host="127.0.0.1", port=8080), success_threshold=1
)
SIDECAR_HTTP = ProbeSpec(
    http_get=HttpGetAction(host="127.0.0.1", port=8090, path="/ready", scheme="HTTP"),
    timeout_seconds=1,
    period_seconds=5,
    success_threshold=1,
    failure_threshold=3,
)
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


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(env)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_v123_controller_environment_loads_under_the_v123_contract() -> None:
    cfg = load_config(v123_env())
    assert cfg.contract == CONTRACT_V1_23
    assert (cfg.namespace, cfg.service, cfg.configuration, cfg.revision) == (
        "default",
        "hello",
        "hello",
        "hello-00001",
    )
    assert (cfg.serving_port, cfg.tls_port, cfg.user_port) == (8012, 8112, 8080)
    assert cfg.container_concurrency == 0 and cfg.breaker is None
    assert cfg.revision_timeout_seconds == 300
    assert cfg.probes == (DEFAULT_TCP,)
    assert cfg.readiness_probe == DEFAULT_TCP
    assert not cfg.enable_multi_container_probes
    assert not cfg.enable_http_full_duplex
    assert not cfg.enable_http2_auto_detection
    # Knative's default config-observability: no request metrics, no tracing, no log.
    assert not cfg.request_metrics_enabled
    assert cfg.otel_metrics
    assert not cfg.tracing_enabled
    assert not cfg.enable_request_log
    assert cfg.request_log_template == V123_REQUEST_LOG_TEMPLATE == DEFAULT_REQUEST_LOG_TEMPLATE
    assert cfg.tls == TlsSettings(min_version="1.3")
    assert cfg.metrics_port == 9091


def test_v1102_controller_environment_loads_under_the_v1102_contract() -> None:
    cfg = load_config(v1102_env())
    assert cfg.contract == CONTRACT_V1_10
    assert cfg.probes == (DEFAULT_TCP,)
    assert cfg.request_metrics_enabled and not cfg.otel_metrics
    assert cfg.observability is None
    assert cfg.tls == LEGACY


@pytest.mark.parametrize(
    ("env", "contract"),
    [
        (v123_env(), CONTRACT_V1_23),
        (v1102_env(), CONTRACT_V1_10),
        # Present but empty still means the new controller (it never sets it empty).
        (v123_env(OBSERVABILITY_CONFIG=""), CONTRACT_V1_23),
        # A hand-mixed environment: OBSERVABILITY_CONFIG wins, the old names are ignored.
        (v123_env(SERVING_REQUEST_METRICS_BACKEND="prometheus"), CONTRACT_V1_23),
        ({k: v123_env()[k] for k in REQUIRED}, CONTRACT_V1_10),
    ],
)
def test_contract_is_chosen_by_observability_config_presence(
    env: dict[str, str], contract: str
) -> None:
    assert contract_of(env) == contract
    assert load_config(env).contract == contract


def test_v123_ignores_the_variables_it_replaced() -> None:
    cfg = load_config(
        v123_env(
            SERVING_REQUEST_METRICS_BACKEND="prometheus",
            SERVING_ENABLE_REQUEST_LOG="not-a-bool",
            TRACING_CONFIG_BACKEND="zipkin",
            ENABLE_PROFILING="garbage",
        )
    )
    assert not cfg.request_metrics_enabled and not cfg.tracing_enabled


def test_v1102_ignores_v123_only_variables() -> None:
    cfg = load_config(
        v1102_env(
            ENABLE_MULTI_CONTAINER_PROBES="garbage",
            ENABLE_HTTP_FULL_DUPLEX="garbage",
            QUEUE_PROXY_TLS_MIN_VERSION="1.1",
        )
    )
    assert cfg.contract == CONTRACT_V1_10 and cfg.tls == LEGACY


def test_unknown_variables_are_ignored() -> None:
    env = v123_env(KUBERNETES_SERVICE_HOST="10.96.0.1", SOMETHING_NEW="x", PATH="/usr/bin")
    assert load_config(env).contract == CONTRACT_V1_23


@pytest.mark.parametrize("var", REQUIRED)
def test_v123_missing_required_variable_names_it(var: str) -> None:
    env = v123_env()
    del env[var]
    assert error_of(env) == f"required environment variable {var} is not set"


@pytest.mark.parametrize(
    "var", ["OBSERVABILITY_CONFIG", "ENABLE_MULTI_CONTAINER_PROBES", "ENABLE_HTTP_FULL_DUPLEX"]
)
def test_v123_optional_variables_may_be_missing(var: str) -> None:
    env = v123_env()
    del env[var]
    load_config(env)


# --- multi-container probes ---------------------------------------------------------


def test_multi_container_probes_decode_user_then_sidecar() -> None:
    cfg = load_config(v123_multi_probe_env())
    assert cfg.enable_multi_container_probes
    assert cfg.probes == (DEFAULT_TCP, SIDECAR_HTTP)
    assert cfg.readiness_probe == DEFAULT_TCP


@pytest.mark.parametrize(
    ("text", "probes"),
    [
        ("", ()),
        ("[]", ()),
        # Go's sidecar would crash on a null element; Sluice skips it.
        ("[null]", ()),
        ('[null,{"tcpSocket":{"port":9}}]', (ProbeSpec(tcp_socket=TcpSocketAction("", 9)),)),
    ],
)
def test_probe_array_edge_cases(text: str, probes: tuple[ProbeSpec, ...]) -> None:
    assert load_config(v123_multi_probe_env(SERVING_READINESS_PROBE=text)).probes == probes


@pytest.mark.parametrize("flag", ["true", "false"])
def test_probe_shape_is_read_from_the_json_not_the_flag(flag: str) -> None:
    single = load_config(v123_env(ENABLE_MULTI_CONTAINER_PROBES=flag))
    multi = load_config(v123_multi_probe_env(ENABLE_MULTI_CONTAINER_PROBES=flag))
    assert single.probes == (DEFAULT_TCP,)
    assert multi.probes == (DEFAULT_TCP, SIDECAR_HTTP)


def test_v1102_contract_also_accepts_a_probe_array() -> None:
    # Controllers 1.13-1.18 send arrays with the old observability variables.
    env = v1102_env(SERVING_READINESS_PROBE=v123_multi_probe_env()["SERVING_READINESS_PROBE"])
    assert load_config(env).probes == (DEFAULT_TCP, SIDECAR_HTTP)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "invalid value for SERVING_READINESS_PROBE: not valid JSON"),
        ("[1]", "invalid value for SERVING_READINESS_PROBE: [0] must be a probe object"),
        ('"x"', "invalid value for SERVING_READINESS_PROBE: want a probe object or an array"),
        (
            '[{"tcpSocket":{"port":8080}},{"periodSeconds":"5"}]',
            "invalid value for SERVING_READINESS_PROBE: [1].periodSeconds must be an integer",
        ),
        (
            '[{"tcpSocket":{"port":8080}},{"httpGet":{"port":1.5}}]',
            "invalid value for SERVING_READINESS_PROBE: [1].httpGet.port must be",
        ),
        (
            '{"grpc":{"port":"x"}}',
            "invalid value for SERVING_READINESS_PROBE: grpc.port must be an integer",
        ),
    ],
)
def test_malformed_probe_values_fail_with_one_line(text: str, message: str) -> None:
    assert error_of(v123_multi_probe_env(SERVING_READINESS_PROBE=text)).startswith(message)


def test_grpc_probe_is_decoded() -> None:
    env = v123_env(SERVING_READINESS_PROBE='{"grpc":{"port":50051,"service":""},"periodSeconds":2}')
    (spec,) = load_config(env).probes
    assert spec.grpc == GrpcAction(port=50051, service="") and spec.period_seconds == 2


# --- booleans and TLS -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "attr"),
    [
        ("ENABLE_MULTI_CONTAINER_PROBES", "enable_multi_container_probes"),
        ("ENABLE_HTTP_FULL_DUPLEX", "enable_http_full_duplex"),
        ("ENABLE_HTTP2_AUTO_DETECTION", "enable_http2_auto_detection"),
    ],
)
@pytest.mark.parametrize(("raw", "value"), [("true", True), ("1", True), ("False", False)])
def test_v123_booleans(var: str, attr: str, raw: str, value: bool) -> None:
    assert getattr(load_config(v123_env(**{var: raw})), attr) is value


@pytest.mark.parametrize(
    "var",
    ["ENABLE_MULTI_CONTAINER_PROBES", "ENABLE_HTTP_FULL_DUPLEX", "ENABLE_HTTP2_AUTO_DETECTION"],
)
def test_v123_bad_boolean_names_the_variable(var: str) -> None:
    assert error_of(v123_env(**{var: "yes"})) == (
        f"invalid value for {var}: 'yes' (want true or false)"
    )


def test_v123_tls_variables_are_read() -> None:
    cfg = load_config(
        v123_env(
            QUEUE_PROXY_TLS_MIN_VERSION="1.2",
            QUEUE_PROXY_TLS_MAX_VERSION="1.3",
            QUEUE_PROXY_TLS_CIPHER_SUITES=(
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256,"
            ),
            QUEUE_PROXY_TLS_CURVE_PREFERENCES="X25519,P-256",
        )
    )
    assert cfg.tls == TlsSettings(
        min_version="1.2",
        max_version="1.3",
        cipher_suites=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
        curve_preferences=("X25519", "P-256"),
    )


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("QUEUE_PROXY_TLS_MIN_VERSION", "1.1", "'1.1' (want 1.2 or 1.3)"),
        ("QUEUE_PROXY_TLS_MAX_VERSION", "TLS1.3", "'TLS1.3' (want 1.2 or 1.3)"),
        ("QUEUE_PROXY_TLS_MAX_VERSION", "1.2", "'1.2' is below the minimum '1.3'"),
        ("QUEUE_PROXY_TLS_CIPHER_SUITES", "TLS_RSA_WITH_RC4_128_SHA", "unknown cipher suite"),
        ("QUEUE_PROXY_TLS_CIPHER_SUITES", "ECDHE-RSA-AES128-GCM-SHA256", "unknown cipher suite"),
        ("QUEUE_PROXY_TLS_CURVE_PREFERENCES", "P256", "unknown curve 'P256'"),
    ],
)
def test_v123_bad_tls_values_name_the_variable(var: str, raw: str, message: str) -> None:
    text = error_of(v123_env(**{var: raw}))
    assert text.startswith(f"invalid value for {var}: ")
    assert message in text
