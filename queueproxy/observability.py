"""``OBSERVABILITY_CONFIG``: Knative 1.19+'s one JSON variable for metrics, tracing and logs.

Knative's controller serialises its ``config-observability`` (``knative.dev/serving``
``pkg/observability.Config``, which embeds ``knative.dev/pkg/observability.Config``) into
this variable, for example::

    {"tracing":{"protocol":"none"},"metrics":{"protocol":"none"},
     "runtime":{"profiling":"disabled","exportInterval":15000000000},
     "requestMetrics":{"protocol":"prometheus"},"requestLogTemplate":"..."}

``parse_observability`` decodes it the way Go's ``encoding/json`` fills the sidecar's
defaults: keys match case-insensitively, unknown keys are ignored, ``null`` leaves the
default, a nested object is merged into the defaults, and a value of the wrong JSON type
is an error (durations are integer nanoseconds). Then the settings that would stop Go's
sidecar at start-up are checked: the metrics and tracing protocols, and a Prometheus
endpoint's ``host:port``. Every error is an ``ObservabilityError`` with one line saying
which field.

What the queue-proxy does with it (``queueproxy.config``): ``requestMetrics`` decides
the request metrics (``prometheus`` serves them on ``:9091`` unless ``endpoint`` names
another port; ``none`` is the default; the OTLP push protocols are accepted and reported
as not exported); ``enableRequestLog``/``requestLogTemplate``/``enableProbeRequestLog``
drive the request log; ``tracing`` is read and validated, and the W3C ``traceparent``
header passes to the app untouched whatever it says. ``metrics`` (the controller's own)
and ``runtime`` are decoded for validation only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

#: knative.dev/serving pkg/observability DefaultRequestLogTemplate (v1.19+): ``.TraceID``
#: replaced v1.10's ``index .Request.Header "X-B3-Traceid"``.
DEFAULT_REQUEST_LOG_TEMPLATE = (
    '{"httpRequest": {"requestMethod": "{{.Request.Method}}", '
    '"requestUrl": "{{js .Request.RequestURI}}", '
    '"requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, '
    '"responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", '
    '"remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", '
    '"referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", '
    '"protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}'
)
#: The port Knative's sidecar serves Prometheus request metrics on by default.
USER_METRICS_PORT = 9091
METRICS_PROTOCOLS = ("grpc", "http/protobuf", "prometheus", "none")
TRACING_PROTOCOLS = ("grpc", "http/protobuf", "stdout", "none")
#: knative.dev/pkg's Prometheus server refuses ports below this one.
MIN_PROMETHEUS_PORT = 1024


class ObservabilityError(ValueError):
    """``OBSERVABILITY_CONFIG`` is unusable; the message is one line naming the field."""


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    protocol: str = "none"
    endpoint: str = ""
    export_interval_ns: int = 0


@dataclass(frozen=True, slots=True)
class TracingSettings:
    protocol: str = "none"
    endpoint: str = ""
    sampling_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    profiling: str = "disabled"
    export_interval_ns: int = 15_000_000_000


@dataclass(frozen=True, slots=True)
class Observability:
    """The decoded variable; the defaults are Knative's ``DefaultConfig()``."""

    tracing: TracingSettings = field(default_factory=TracingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    request_metrics: MetricsSettings = field(default_factory=MetricsSettings)
    enable_request_log: bool = False
    request_log_template: str = DEFAULT_REQUEST_LOG_TEMPLATE
    enable_probe_request_log: bool = False

    @property
    def prometheus_port(self) -> int | None:
        """Where Prometheus request metrics are served, or ``None`` when they are not."""
        rm = self.request_metrics
        if rm.protocol != "prometheus":
            return None
        if not rm.endpoint:
            return USER_METRICS_PORT
        return _prometheus_port(rm.endpoint)


def not_implemented(obs: Observability) -> list[str]:
    """One line per setting Go's sidecar would act on and Sluice's does not."""
    notes = []
    rm = obs.request_metrics
    if rm.protocol in ("grpc", "http/protobuf"):
        notes.append(
            f"OBSERVABILITY_CONFIG requestMetrics.protocol {rm.protocol!r}: OTLP export is "
            "not implemented, no request metrics are exported"
        )
    if obs.tracing.protocol != "none":
        notes.append(
            f"OBSERVABILITY_CONFIG tracing.protocol {obs.tracing.protocol!r}: spans are not "
            "exported; trace context headers pass to the app untouched"
        )
    if obs.runtime.profiling == "enabled":
        notes.append("OBSERVABILITY_CONFIG runtime.profiling 'enabled': pprof is not served")
    return notes


def parse_observability(text: str) -> Observability:
    """Decode ``OBSERVABILITY_CONFIG``; empty means the defaults. Raises ``ObservabilityError``."""
    if not text:
        return Observability()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ObservabilityError(f"not valid JSON: {exc}") from None
    if raw is None:
        return Observability()
    top = _object(raw, "the value")
    obs = Observability(
        tracing=_tracing(_get(top, "tracing"), TracingSettings()),
        metrics=_metrics(_get(top, "metrics"), MetricsSettings(), "metrics"),
        runtime=_runtime(_get(top, "runtime"), RuntimeSettings()),
        request_metrics=_metrics(_get(top, "requestMetrics"), MetricsSettings(), "requestMetrics"),
        enable_request_log=_bool(top, "enableRequestLog", "", False),
        request_log_template=_str(top, "requestLogTemplate", "", DEFAULT_REQUEST_LOG_TEMPLATE),
        enable_probe_request_log=_bool(top, "enableProbeRequestLog", "", False),
    )
    # Fields the sidecar does not use, decoded only so a wrong type fails as in Go.
    _bool(top, "EnableVarLogCollection", "", False)
    _str(top, "LoggingURLTemplate", "", "")
    _validate(obs)
    return obs


def _validate(obs: Observability) -> None:
    for where, settings in (("requestMetrics", obs.request_metrics), ("metrics", obs.metrics)):
        if settings.protocol not in METRICS_PROTOCOLS:
            raise ObservabilityError(
                f"{where}.protocol: unsupported protocol {settings.protocol!r} "
                "(want grpc, http/protobuf, prometheus or none)"
            )
    if obs.tracing.protocol not in TRACING_PROTOCOLS:
        raise ObservabilityError(
            f"tracing.protocol: unsupported protocol {obs.tracing.protocol!r} "
            "(want grpc, http/protobuf, stdout or none)"
        )
    rm = obs.request_metrics
    if rm.protocol == "prometheus" and rm.endpoint:
        _prometheus_port(rm.endpoint)  # a bad endpoint fails at start-up, as in Go


def _prometheus_port(endpoint: str) -> int:
    host, sep, port = endpoint.rpartition(":")
    bracketed = host.startswith("[") == host.endswith("]")
    if not sep or not bracketed or (":" in host and not host.startswith("[")):
        raise ObservabilityError(
            f'requestMetrics.endpoint: {endpoint!r} is not host:port (want e.g. ":9091")'
        )
    if not port.isdigit() or not MIN_PROMETHEUS_PORT <= int(port) <= 65535:
        raise ObservabilityError(
            f"requestMetrics.endpoint: port {port!r} is not a number {MIN_PROMETHEUS_PORT}..65535"
        )
    return int(port)


# --- Go encoding/json, for the few shapes this variable has ---------------------------


def _object(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ObservabilityError(f"{where} must be a JSON object")
    return v


def _get(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]``, matching the key as Go does: exactly, else ignoring case."""
    if key in obj:
        return obj[key]
    folded = key.casefold()
    for k, v in obj.items():
        if k.casefold() == folded:
            return v
    return None


def _str(obj: dict[str, Any], key: str, at: str, default: str) -> str:
    v = _get(obj, key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise ObservabilityError(f"{at}{key} must be a string")
    return v


def _bool(obj: dict[str, Any], key: str, at: str, default: bool) -> bool:
    v = _get(obj, key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ObservabilityError(f"{at}{key} must be true or false")
    return v


def _int(obj: dict[str, Any], key: str, at: str, default: int) -> int:
    v = _get(obj, key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ObservabilityError(f"{at}{key} must be an integer (nanoseconds)")
    return v


def _float(obj: dict[str, Any], key: str, at: str, default: float) -> float:
    v = _get(obj, key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ObservabilityError(f"{at}{key} must be a number")
    return float(v)


def _metrics(v: Any, base: MetricsSettings, where: str) -> MetricsSettings:
    if v is None:
        return base
    obj = _object(v, where)
    at = where + "."
    return replace(
        base,
        protocol=_str(obj, "protocol", at, base.protocol),
        endpoint=_str(obj, "endpoint", at, base.endpoint),
        export_interval_ns=_int(obj, "exportInterval", at, base.export_interval_ns),
    )


def _tracing(v: Any, base: TracingSettings) -> TracingSettings:
    if v is None:
        return base
    obj = _object(v, "tracing")
    return replace(
        base,
        protocol=_str(obj, "protocol", "tracing.", base.protocol),
        endpoint=_str(obj, "endpoint", "tracing.", base.endpoint),
        sampling_rate=_float(obj, "samplingRate", "tracing.", base.sampling_rate),
    )


def _runtime(v: Any, base: RuntimeSettings) -> RuntimeSettings:
    if v is None:
        return base
    obj = _object(v, "runtime")
    return replace(
        base,
        profiling=_str(obj, "profiling", "runtime.", base.profiling),
        export_interval_ns=_int(obj, "exportInterval", "runtime.", base.export_interval_ns),
    )
