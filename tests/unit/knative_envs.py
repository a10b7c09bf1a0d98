"""The queue-proxy environments Knative's controllers generate, as test data.

``v123_env`` is what Knative Serving v1.23.0 (``knative.dev/serving`` v0.50.0) sets on the
sidecar of a typical revision: service ``hello``, one container listening on 8080 with no
readiness probe of its own, containerConcurrency 0, timeoutSeconds 300, and Knative's
released ConfigMaps left at their defaults. Source: ``pkg/reconciler/revision/resources/
queue.go`` ``makeQueueContainer`` (the env list, in its order), with the probe defaulted by
``pkg/apis/serving/v1/revision_defaults.go`` and rewritten by ``applyReadinessProbeDefaults``,
and ``OBSERVABILITY_CONFIG`` as ``encoding/json`` writes ``pkg/observability.DefaultConfig()``
(``omitempty`` drops the false and empty fields; durations are nanoseconds). Values Kubernetes
fills from the downward API (``SERVING_POD``, ``SERVING_POD_IP``, ``HOST_IP``) are examples.

``v1102_env`` is the v1.10.2 equivalent (the same revision; reference §1.2).
"""

from __future__ import annotations

import json

#: knative.dev/serving pkg/observability DefaultRequestLogTemplate at v0.50.0.
V123_REQUEST_LOG_TEMPLATE = (
    '{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": '
    '"{{js .Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": '
    '{{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": '
    '"{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": '
    '"{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": '
    '"{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}'
)

#: The revision's user-container probe after defaulting (tcpSocket on the user port).
DEFAULT_PROBE = '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}'
#: A sidecar's ``httpGet: {path: /ready, port: 8090}, periodSeconds: 5`` after defaulting.
SIDECAR_PROBE = (
    '{"httpGet":{"path":"/ready","port":8090,"host":"127.0.0.1","scheme":"HTTP"},'
    '"timeoutSeconds":1,"periodSeconds":5,"successThreshold":1,"failureThreshold":3}'
)


def observability_json(
    *, request_metrics: str = "none", request_log: bool = False, tracing: str = "none"
) -> str:
    """``OBSERVABILITY_CONFIG`` as the v1.23.0 controller serialises it."""
    doc: dict[str, object] = {
        "tracing": {"protocol": tracing},
        "metrics": {"protocol": "none"},
        "runtime": {"profiling": "disabled", "exportInterval": 15_000_000_000},
        "requestMetrics": {"protocol": request_metrics},
    }
    if request_log:
        doc["enableRequestLog"] = True
    doc["requestLogTemplate"] = V123_REQUEST_LOG_TEMPLATE
    return json.dumps(doc, separators=(",", ":"))


def v123_env(**overrides: str) -> dict[str, str]:
    """The sidecar environment of a v1.23.0 revision (module docstring), plus overrides."""
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
        "SERVING_POD": "hello-00001-deployment-6d9f8b7c5-x2v4q",
        "SERVING_POD_IP": "10.244.0.12",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "USER_PORT": "8080",
        "SYSTEM_NAMESPACE": "knative-serving",
        "SERVING_READINESS_PROBE": DEFAULT_PROBE,
        "HOST_IP": "172.18.0.2",
        "ENABLE_HTTP2_AUTO_DETECTION": "false",
        "ENABLE_HTTP_FULL_DUPLEX": "false",
        "ROOT_CA": "",
        "QUEUE_PROXY_TLS_MIN_VERSION": "",
        "QUEUE_PROXY_TLS_MAX_VERSION": "",
        "QUEUE_PROXY_TLS_CIPHER_SUITES": "",
        "QUEUE_PROXY_TLS_CURVE_PREFERENCES": "",
        "ENABLE_MULTI_CONTAINER_PROBES": "false",
        "OBSERVABILITY_CONFIG": observability_json(),
    }
    env.update(overrides)
    return env


def v123_multi_probe_env(**overrides: str) -> dict[str, str]:
    """``multi-container-probing: enabled`` and one sidecar with a readiness probe."""
    env = v123_env(
        ENABLE_MULTI_CONTAINER_PROBES="true",
        SERVING_READINESS_PROBE=f"[{DEFAULT_PROBE},{SIDECAR_PROBE}]",
    )
    env.update(overrides)
    return env


def v1102_env(**overrides: str) -> dict[str, str]:
    """The same revision's sidecar environment under v1.10.2 (reference §1.2)."""
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
        "SERVING_POD": "hello-00001-deployment-6d9f8b7c5-x2v4q",
        "SERVING_POD_IP": "10.244.0.12",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "SERVING_REQUEST_LOG_TEMPLATE": "",
        "SERVING_ENABLE_REQUEST_LOG": "false",
        "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
        "TRACING_CONFIG_BACKEND": "none",
        "TRACING_CONFIG_ZIPKIN_ENDPOINT": "",
        "TRACING_CONFIG_DEBUG": "false",
        "TRACING_CONFIG_SAMPLE_RATE": "0.1",
        "USER_PORT": "8080",
        "SYSTEM_NAMESPACE": "knative-serving",
        "METRICS_DOMAIN": "knative.dev/internal/serving",
        "SERVING_READINESS_PROBE": DEFAULT_PROBE,
        "ENABLE_PROFILING": "false",
        "SERVING_ENABLE_PROBE_REQUEST_LOG": "false",
        "METRICS_COLLECTOR_ADDRESS": "",
        "HOST_IP": "172.18.0.2",
        "ENABLE_HTTP2_AUTO_DETECTION": "false",
        "ROOT_CA": "",
    }
    env.update(overrides)
    return env
