"""The queue-proxy's configuration: Knative's environment contract, read once at start-up.

``load_config`` is the only place that reads the environment. It accepts exactly the
variables Knative's controller sets on the sidecar (reference §1.2) plus a few
``SLUICE_*`` overrides, and fails with one ``ConfigError`` line naming the variable.
Variables it does not know are ignored.

**Which contract.** Two generations of controllers exist, and the environment says which
one wrote it; no flag chooses. The rule: ``OBSERVABILITY_CONFIG`` present (even empty)
means the **v1.23.0** contract, absent means **v1.10.2**. Every controller from Knative
1.19 on (the OpenTelemetry move) always sets ``OBSERVABILITY_CONFIG`` (a JSON struct,
never empty) and never sets the variables it replaced; v1.10.2's (up to 1.18's)
never sets it and always sets ``SERVING_REQUEST_METRICS_BACKEND``,
``TRACING_CONFIG_BACKEND`` and ``SERVING_ENABLE_REQUEST_LOG``. Where both appear (a
hand-made environment), ``OBSERVABILITY_CONFIG`` wins and the old variables are ignored.

* Both contracts require the same twelve variables (``_REQUIRED``; the Go ``config``
  structs of v1.10.2 and v1.23.0 agree) and read the ``REVISION_*`` timeouts,
  ``SERVING_SERVICE``, ``SERVING_READINESS_PROBE`` (one probe object, or an array of
  them: ``queueproxy.probe_spec``) and ``ENABLE_HTTP2_AUTO_DETECTION``.
* v1.10.2 only: ``SERVING_REQUEST_METRICS_BACKEND``, ``SERVING_REQUEST_LOG_TEMPLATE``,
  ``SERVING_ENABLE_REQUEST_LOG``, ``SERVING_ENABLE_PROBE_REQUEST_LOG``,
  ``TRACING_CONFIG_BACKEND``, ``ENABLE_PROFILING``; request metrics keep v1.10.2's names.
* v1.23.0 only: ``OBSERVABILITY_CONFIG`` (``queueproxy.observability``: request metrics
  with the OpenTelemetry names, request log, tracing), ``ENABLE_MULTI_CONTAINER_PROBES``,
  ``ENABLE_HTTP_FULL_DUPLEX`` and ``QUEUE_PROXY_TLS_*`` (``queueproxy.tlsconfig``).
* gRPC readiness probes are checked with a built-in h2c health client
  (``queueproxy.grpc_health``), as v1.23.0's sidecar checks them.

Parsing follows Go's ``envconfig`` as Knative uses it: a required variable must be
present (it may be empty unless it has to parse as a number); integers use Go's
``strconv.ParseInt`` base-0 rules (``0x1f``, ``0o17``, ``017`` octal, ``1_000``); booleans
use ``strconv.ParseBool`` (``1 t T TRUE true True`` and ``0 f F FALSE false False``).
One deliberate leniency: an *optional* variable set to the empty string counts as absent
(Go would reject an empty number or bool), because templating tools often emit
``VAR=""`` for unset values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from queueproxy.observability import Observability, ObservabilityError, parse_observability
from queueproxy.probe_spec import ProbeDecodeError, ProbeSpec, parse_probes
from queueproxy.tlsconfig import LEGACY, TlsSettings, TlsSettingsError, parse_tls_settings

#: The two environment contracts (see the module docstring for how one is chosen).
CONTRACT_V1_10 = "v1.10.2"
CONTRACT_V1_23 = "v1.23.0"


class ConfigError(Exception):
    """A missing or invalid setting; the message is one line naming the variable."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Breaker sizing derived from ``CONTAINER_CONCURRENCY`` (Knative's ``breakerParams``)."""

    queue_depth: int
    max_concurrency: int
    initial_capacity: int


#: Knative sizes the pending queue at ten times the concurrency limit.
QUEUE_DEPTH_PER_SLOT = 10


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the queue-proxy needs, validated. Build it with ``load_config``."""

    namespace: str
    configuration: str
    revision: str
    pod_name: str
    pod_ip: str
    serving_port: int
    tls_port: int
    user_port: int
    container_concurrency: int
    revision_timeout_seconds: int
    logging_config: str
    logging_level: str
    service: str = ""
    response_start_timeout_seconds: int = 0
    idle_timeout_seconds: int = 0
    #: Decoded ``SERVING_READINESS_PROBE``; ``None`` means the container is always ready.
    readiness_probe: ProbeSpec | None = None
    request_log_template: str = ""
    enable_request_log: bool = False
    enable_probe_request_log: bool = False
    request_metrics_backend: str = ""
    enable_http2_auto_detection: bool = False
    enable_profiling: bool = False
    tracing_backend: str = ""
    # Sluice-only settings.
    admin_port: int = 8022
    stats_port: int = 9090
    metrics_port: int = 9091
    #: The drain quiet period: how long without a request before shutdown proceeds.
    drain_quiet_seconds: float = 30.0
    #: Address the servers listen on; "" means every interface (IPv4 and IPv6).
    bind_host: str = ""
    #: Where the user container listens; Knative always uses the pod's loopback.
    user_host: str = "127.0.0.1"
    #: Where ``tls.crt``/``tls.key`` are looked for (Knative mounts them here); TLS on
    #: ``QUEUE_SERVING_TLS_PORT`` is served only when both exist.
    certs_dir: str = "/var/lib/knative/certs"
    #: Which controller generation wrote the environment: ``CONTRACT_V1_10``/``_V1_23``.
    contract: str = CONTRACT_V1_10
    #: Every decoded probe (user container first, then sidecars); ``()``: always ready.
    #: Empty with ``readiness_probe`` set means that one probe alone.
    readiness_probes: tuple[ProbeSpec, ...] = ()
    enable_multi_container_probes: bool = False
    #: Accepted and recorded; the HTTP/1 engine already streams request bodies while
    #: the response is written, which is what Go needs the switch for.
    enable_http_full_duplex: bool = False
    #: The decoded ``OBSERVABILITY_CONFIG`` (v1.23.0 contract only).
    observability: Observability | None = None
    #: Settings for the TLS serving port (v1.10.2: minimum TLS 1.2, nothing else).
    tls: TlsSettings = LEGACY

    def __post_init__(self) -> None:
        for var, port in (
            ("QUEUE_SERVING_PORT", self.serving_port),
            ("QUEUE_SERVING_TLS_PORT", self.tls_port),
            ("USER_PORT", self.user_port),
            ("SLUICE_ADMIN_PORT", self.admin_port),
            ("SLUICE_STATS_PORT", self.stats_port),
            ("SLUICE_METRICS_PORT", self.metrics_port),
        ):
            if not 1 <= port <= 65535:
                raise ConfigError(f"invalid value for {var}: {port!r} (want a port 1..65535)")
        for var, value in (
            ("CONTAINER_CONCURRENCY", self.container_concurrency),
            ("REVISION_TIMEOUT_SECONDS", self.revision_timeout_seconds),
            ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", self.response_start_timeout_seconds),
            ("REVISION_IDLE_TIMEOUT_SECONDS", self.idle_timeout_seconds),
        ):
            if value < 0:
                raise ConfigError(f"invalid value for {var}: {value!r} (want an integer >= 0)")
        if self.drain_quiet_seconds < 0:
            raise ConfigError(
                f"invalid value for SLUICE_DRAIN_QUIET_SECONDS: {self.drain_quiet_seconds!r} "
                "(want a number of seconds >= 0)"
            )

    @property
    def breaker(self) -> BreakerSettings | None:
        """Breaker sizing, or ``None`` when CC < 1 (no concurrency limit, no queue)."""
        cc = self.container_concurrency
        if cc < 1:
            return None
        return BreakerSettings(
            queue_depth=QUEUE_DEPTH_PER_SLOT * cc, max_concurrency=cc, initial_capacity=cc
        )

    @property
    def probes(self) -> tuple[ProbeSpec, ...]:
        """The probes the readiness check runs; ``()`` means always ready."""
        if self.readiness_probes:
            return self.readiness_probes
        return (self.readiness_probe,) if self.readiness_probe is not None else ()

    @property
    def otel_metrics(self) -> bool:
        """Request metrics use the OpenTelemetry names (v1.23.0), not v1.10.2's."""
        return self.contract == CONTRACT_V1_23

    @property
    def request_metrics_enabled(self) -> bool:
        """Prometheus request metrics on the metrics port.

        v1.23.0: ``OBSERVABILITY_CONFIG`` ``requestMetrics.protocol`` is ``prometheus``
        (the default is ``none``; the OTLP push protocols are not implemented). v1.10.2:
        ``SERVING_REQUEST_METRICS_BACKEND=prometheus``; Knative's controller defaults the
        backend to it, but an absent or empty variable means no request metrics, as in
        the Go sidecar, and ``opencensus`` (push) is not implemented.
        """
        if self.contract == CONTRACT_V1_23:
            obs = self.observability
            return obs is not None and obs.request_metrics.protocol == "prometheus"
        return self.request_metrics_backend.strip().lower() == "prometheus"

    @property
    def tracing_enabled(self) -> bool:
        """Knative turns tracing on for any backend but ``none``; empty counts as off here."""
        return self.tracing_backend not in ("", "none")

    @property
    def service_label(self) -> str:
        """The ``service_name`` metric label: the service, or ``unknown`` when empty."""
        return self.service or "unknown"


_REQUIRED = (
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
)

_GO_INT = re.compile(
    r"[+-]?(?:0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0(?:_?[0-7])*"
    r"|[1-9](?:_?[0-9])*)"
)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_int(text: str) -> int:
    """Parse like Go's ``strconv.ParseInt(text, 0, 64)``; raises ``ValueError``."""
    if not _GO_INT.fullmatch(text):
        raise ValueError(text)
    digits = text.lstrip("+-").replace("_", "")
    neg = text.startswith("-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "0123456789":
        value = int(digits, 8)  # Go's legacy octal: a leading 0
    else:
        value = int(digits, 0)
    value = -value if neg else value
    if not -(2**63) <= value < 2**63:
        raise ValueError(text)
    return value


def parse_go_bool(text: str) -> bool:
    """Parse like Go's ``strconv.ParseBool``; raises ``ValueError``."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def contract_of(environ: Mapping[str, str]) -> str:
    """``CONTRACT_V1_23`` if ``OBSERVABILITY_CONFIG`` is present, else ``CONTRACT_V1_10``."""
    return CONTRACT_V1_23 if "OBSERVABILITY_CONFIG" in environ else CONTRACT_V1_10


def load_config(environ: Mapping[str, str]) -> Config:
    """Build and validate the configuration from ``environ``; raises ``ConfigError``."""
    contract = contract_of(environ)
    for var in _REQUIRED:
        if var not in environ:
            raise ConfigError(f"required environment variable {var} is not set")

    def integer(var: str, default: int | None = None, *, port: bool = False) -> int:
        raw = environ.get(var, "")
        if raw == "" and default is not None:
            return default
        want = "a port 1..65535" if port else "an integer >= 0"
        try:
            value = parse_go_int(raw)
        except ValueError:
            raise ConfigError(f"invalid value for {var}: {raw!r} (want {want})") from None
        if (port and not 1 <= value <= 65535) or value < 0:
            raise ConfigError(f"invalid value for {var}: {raw!r} (want {want})")
        return value

    def boolean(var: str) -> bool:
        raw = environ.get(var, "")
        if raw == "":
            return False
        try:
            return parse_go_bool(raw)
        except ValueError:
            raise ConfigError(f"invalid value for {var}: {raw!r} (want true or false)") from None

    raw_quiet = environ.get("SLUICE_DRAIN_QUIET_SECONDS", "")
    try:
        quiet = float(raw_quiet) if raw_quiet else 30.0
        if not 0 <= quiet < float("inf"):
            raise ValueError(raw_quiet)
    except ValueError:
        raise ConfigError(
            f"invalid value for SLUICE_DRAIN_QUIET_SECONDS: {raw_quiet!r} "
            "(want a number of seconds >= 0)"
        ) from None

    try:
        probes = parse_probes(environ.get("SERVING_READINESS_PROBE", ""))
    except ProbeDecodeError as exc:
        raise ConfigError(f"invalid value for SERVING_READINESS_PROBE: {exc}") from None

    obs: Observability | None = None
    tls = LEGACY
    if contract == CONTRACT_V1_23:
        try:
            obs = parse_observability(environ["OBSERVABILITY_CONFIG"])
        except ObservabilityError as exc:
            raise ConfigError(f"invalid value for OBSERVABILITY_CONFIG: {exc}") from None
        try:
            tls = parse_tls_settings(environ)
        except TlsSettingsError as exc:
            raise ConfigError(str(exc)) from None
        log_template = obs.request_log_template
        request_log = obs.enable_request_log
        probe_log = obs.enable_probe_request_log
        metrics_backend = ""  # OBSERVABILITY_CONFIG decides, see request_metrics_enabled
        profiling = obs.runtime.profiling == "enabled"
        tracing = obs.tracing.protocol
    else:
        log_template = environ.get("SERVING_REQUEST_LOG_TEMPLATE", "")
        request_log = boolean("SERVING_ENABLE_REQUEST_LOG")
        probe_log = boolean("SERVING_ENABLE_PROBE_REQUEST_LOG")
        metrics_backend = environ.get("SERVING_REQUEST_METRICS_BACKEND", "")
        profiling = boolean("ENABLE_PROFILING")
        tracing = environ.get("TRACING_CONFIG_BACKEND", "")
    v123 = contract == CONTRACT_V1_23
    prom_port = obs.prometheus_port if obs is not None else None

    return Config(
        namespace=environ["SERVING_NAMESPACE"],
        configuration=environ["SERVING_CONFIGURATION"],
        revision=environ["SERVING_REVISION"],
        pod_name=environ["SERVING_POD"],
        pod_ip=environ["SERVING_POD_IP"],
        serving_port=integer("QUEUE_SERVING_PORT", port=True),
        tls_port=integer("QUEUE_SERVING_TLS_PORT", port=True),
        user_port=integer("USER_PORT", port=True),
        container_concurrency=integer("CONTAINER_CONCURRENCY"),
        revision_timeout_seconds=integer("REVISION_TIMEOUT_SECONDS"),
        logging_config=environ["SERVING_LOGGING_CONFIG"],
        logging_level=environ["SERVING_LOGGING_LEVEL"],
        service=environ.get("SERVING_SERVICE", ""),
        response_start_timeout_seconds=integer("REVISION_RESPONSE_START_TIMEOUT_SECONDS", 0),
        idle_timeout_seconds=integer("REVISION_IDLE_TIMEOUT_SECONDS", 0),
        readiness_probe=probes[0] if probes else None,
        readiness_probes=probes,
        request_log_template=log_template,
        enable_request_log=request_log,
        enable_probe_request_log=probe_log,
        request_metrics_backend=metrics_backend,
        # v1.10.2's envconfig split the field name into ENABLE_HTT_P2_AUTO_DETECTION (what
        # it reads), so the variable its controller sets is inert there (#14564).
        enable_http2_auto_detection=boolean(
            "ENABLE_HTTP2_AUTO_DETECTION" if v123 else "ENABLE_HTT_P2_AUTO_DETECTION"
        ),
        enable_profiling=profiling,
        tracing_backend=tracing,
        admin_port=integer("SLUICE_ADMIN_PORT", 8022, port=True),
        stats_port=integer("SLUICE_STATS_PORT", 9090, port=True),
        # The observability endpoint's port, unless Sluice's override says otherwise.
        metrics_port=integer("SLUICE_METRICS_PORT", prom_port or 9091, port=True),
        drain_quiet_seconds=quiet,
        bind_host=environ.get("SLUICE_BIND_HOST", ""),
        user_host=environ.get("SLUICE_USER_HOST", "") or "127.0.0.1",
        certs_dir=environ.get("SLUICE_CERTS_DIR", "") or "/var/lib/knative/certs",
        contract=contract,
        enable_multi_container_probes=v123 and boolean("ENABLE_MULTI_CONTAINER_PROBES"),
        enable_http_full_duplex=v123 and boolean("ENABLE_HTTP_FULL_DUPLEX"),
        observability=obs,
        tls=tls,
    )
