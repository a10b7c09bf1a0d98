"""Knative's ``config-autoscaler`` keys and ``autoscaling.knative.dev/*`` annotations.

``AutoscalerConfig`` holds the cluster-wide settings with Knative's defaults (built from
``KEY=VALUE`` overrides by ``parse_autoscaler_overrides``); ``RevisionScalingSpec`` is one
revision's effective settings after its annotations are applied; ``annotation_errors`` gives
the webhook-style messages for bad annotations. Frozen values and pure functions only; the
decider that uses them is ``serving.kpa``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from proxy.dataplane.goduration import parse_duration as go_duration

ANNOTATION_PREFIX = "autoscaling.knative.dev/"
KPA_CLASS = "kpa.autoscaling.knative.dev"
METRIC_CONCURRENCY = "concurrency"
METRIC_RPS = "rps"
#: Knative's bounds on the ``window`` annotation.
WINDOW_MIN_SECONDS = 6.0
WINDOW_MAX_SECONDS = 3600.0
#: Knative's stats bucket: one aggregated value per second.
BUCKET_SECONDS = 1.0


def parse_duration(text: str) -> float:
    """A Go duration (``proxy.dataplane.goduration``) in seconds; negative ones are refused,
    as every autoscaler setting written as a duration must be >= 0."""
    seconds = go_duration(text)
    if seconds < 0:
        raise ValueError(f'invalid duration "{text}": must not be negative')
    return seconds


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"invalid boolean {text!r}")


_INF = math.inf
#: Accepted range of each numeric setting (Knative's, except stable-window: see the class).
_CONFIG_RANGES: dict[str, tuple[float, float]] = {
    "stable_window": (1, 3600),
    "panic_window_percentage": (1, 100),
    "panic_threshold_percentage": (110, 1000),
    "container_concurrency_target_percentage": (0.01, 100),
    "container_concurrency_target_default": (0.01, _INF),
    "requests_per_second_target_default": (0.01, _INF),
    "target_burst_capacity": (-1, _INF),
    "activator_capacity": (1, _INF),
    "scale_to_zero_grace_period": (0.001, 3600),
    "scale_to_zero_pod_retention_period": (0, 3600),
    "max_scale_up_rate": (1.000001, _INF),
    "max_scale_down_rate": (1.000001, _INF),
    "initial_scale": (0, _INF),
    "min_scale": (0, _INF),
    "max_scale": (0, _INF),
    "scale_down_delay": (0, 3600),
    "max_scale_limit": (0, _INF),
}


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """Knative's ``config-autoscaler`` keys that the KPA uses, with Knative's defaults.

    Durations are seconds. One deliberate deviation: ``stable-window`` may go down to 1 s (Knative
    requires 6 s) so that tests and demos can scale in seconds.
    """

    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    container_concurrency_target_percentage: float = 70.0
    container_concurrency_target_default: float = 100.0
    requests_per_second_target_default: float = 200.0
    target_burst_capacity: float = 211.0
    activator_capacity: float = 100.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    enable_scale_to_zero: bool = True
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    min_scale: int = 0
    max_scale: int = 0
    scale_down_delay: float = 0.0
    max_scale_limit: int = 0

    def __post_init__(self) -> None:
        for name, (lo, hi) in _CONFIG_RANGES.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                key = name.replace("_", "-")
                raise ValueError(f"autoscaler setting {key}={value} must be in [{lo:g}, {hi:g}]")
        if self.initial_scale == 0 and not self.allow_zero_initial_scale:
            raise ValueError("autoscaler setting initial-scale=0 needs allow-zero-initial-scale")
        if self.max_scale and self.min_scale > self.max_scale:
            raise ValueError("autoscaler setting min-scale must not exceed max-scale")
        if self.max_scale_limit and self.max_scale > self.max_scale_limit:
            raise ValueError("autoscaler setting max-scale must not exceed max-scale-limit")

    @property
    def target_utilization(self) -> float:
        """The utilization fraction; values above 1 are percentages, as in Knative."""
        pct = self.container_concurrency_target_percentage
        return pct / 100 if pct > 1 else pct


def _config_kinds() -> dict[str, str]:
    return {f.name.replace("_", "-"): str(f.type) for f in fields(AutoscalerConfig)}


_DURATION_KEYS = frozenset(
    f.replace("_", "-") for f in _CONFIG_RANGES if f.endswith(("window", "period", "delay"))
)


def parse_autoscaler_overrides(
    items: Sequence[str], base: AutoscalerConfig | None = None
) -> AutoscalerConfig:
    """Apply ``KEY=VALUE`` overrides (``config-autoscaler`` key names) to ``base``.

    Raises a one-line ``ValueError`` naming the key for an unknown key, a malformed item or a
    value that does not parse or fails validation.
    """
    kinds = _config_kinds()
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"autoscaler override {item!r} is not KEY=VALUE")
        if key not in kinds:
            raise ValueError(f"unknown autoscaler setting {key!r}")
        kind = kinds[key]
        try:
            value: Any
            if key in _DURATION_KEYS:
                value = parse_duration(raw)
            elif kind == "bool":
                value = _parse_bool(raw)
            elif kind == "int":
                value = int(raw.strip())
            else:
                value = float(raw.strip())
        except ValueError:
            raise ValueError(f"autoscaler setting {key}: invalid value {raw!r}") from None
        changes[key.replace("-", "_")] = value
    return replace(base or AutoscalerConfig(), **changes)


# --- per-revision annotations ------------------------------------------------------------------

#: Legacy camelCase spellings Knative still accepts, mapped to the current key.
_ALIASES = {
    "minScale": "min-scale",
    "maxScale": "max-scale",
    "initialScale": "initial-scale",
    "panicWindowPercentage": "panic-window-percentage",
    "panicThresholdPercentage": "panic-threshold-percentage",
    "targetUtilizationPercentage": "target-utilization-percentage",
}


@dataclass(frozen=True, slots=True)
class RevisionScalingSpec:
    """Everything one revision's decider needs: config defaults overlaid with annotations.

    ``total_value`` is the per-pod capacity the target is a fraction of; ``target_value`` is
    ``max(0.01, total_value * utilization)``. ``max_scale`` 0 means unbounded.
    """

    target_value: float
    total_value: float
    stable_window: float
    panic_window: float
    panic_threshold: float
    max_scale_up_rate: float
    max_scale_down_rate: float
    target_burst_capacity: float
    scale_down_delay: float
    min_scale: int
    max_scale: int
    initial_scale: int
    activation_scale: int
    enable_scale_to_zero: bool
    scale_to_zero_grace_period: float
    metric: str = METRIC_CONCURRENCY

    @classmethod
    def from_annotations(
        cls,
        annotations: Mapping[str, str],
        container_concurrency: int = 0,
        cfg: AutoscalerConfig | None = None,
    ) -> RevisionScalingSpec:
        """Build the spec; raises ``ValueError`` listing every bad annotation (one per line)."""
        spec, errors = _build_spec(annotations, container_concurrency, cfg or AutoscalerConfig())
        if errors or spec is None:
            raise ValueError("\n".join(errors))
        return spec


def annotation_errors(
    annotations: Mapping[str, str],
    cfg: AutoscalerConfig | None = None,
    path: str = "metadata.annotations",
) -> list[str]:
    """Validation messages for the ``autoscaling.knative.dev/*`` annotations, with field paths."""
    return _build_spec(annotations, 0, cfg or AutoscalerConfig(), path)[1]


def _build_spec(
    annotations: Mapping[str, str],
    cc: int,
    cfg: AutoscalerConfig,
    path: str = "metadata.annotations",
) -> tuple[RevisionScalingSpec | None, list[str]]:
    errors: list[str] = []
    raw: dict[str, str] = {}
    for key, value in annotations.items():
        if key.startswith(ANNOTATION_PREFIX):
            short = key[len(ANNOTATION_PREFIX) :]
            raw[_ALIASES.get(short, short)] = value

    def where(key: str) -> str:
        return f"{path}[{ANNOTATION_PREFIX}{key}]"

    def number(key: str, lo: float, hi: float, default: float, integer: bool = False) -> float:
        if key not in raw:
            return default
        text = raw[key].strip()
        try:
            value = float(int(text)) if integer else float(text)
        except ValueError:
            errors.append(f"invalid value: {raw[key]}: {where(key)}")
            return default
        if not lo <= value <= hi or math.isnan(value):
            errors.append(f"expected {_num(lo)} <= {_num(value)} <= {_num(hi)}: {where(key)}")
            return default
        return value

    def duration(key: str, lo: float, hi: float, default: float) -> float:
        if key not in raw:
            return default
        try:
            value = parse_duration(raw[key])
        except ValueError:
            errors.append(f"invalid value: {raw[key]}: {where(key)}")
            return default
        if not lo <= value <= hi:
            errors.append(f"expected {_dur(lo)} <= {raw[key]} <= {_dur(hi)}: {where(key)}")
            return default
        if value != int(value):
            errors.append(f"must be specified with at most second precision: {where(key)}")
        return value

    big = float(2**31 - 1)
    cls_name = raw.get("class", KPA_CLASS)
    if cls_name != KPA_CLASS:
        errors.append(
            f"invalid value: {cls_name}: {where('class')} (sluice runs only the KPA, {KPA_CLASS})"
        )
    metric = raw.get("metric", METRIC_CONCURRENCY)
    if metric not in (METRIC_CONCURRENCY, METRIC_RPS):
        errors.append(f"invalid value: {metric}: {where('metric')}")
        metric = METRIC_CONCURRENCY
    min_scale = int(number("min-scale", 0, big, cfg.min_scale, integer=True))
    max_hi = float(cfg.max_scale_limit) if cfg.max_scale_limit else big
    max_lo = 1.0 if cfg.max_scale_limit else 0.0
    max_scale = int(number("max-scale", max_lo, max_hi, cfg.max_scale, integer=True))
    if max_scale and min_scale > max_scale:
        errors.append(
            f"min-scale={min_scale} is greater than max-scale={max_scale}: {where('min-scale')}"
        )
    init_lo = 0.0 if cfg.allow_zero_initial_scale else 1.0
    initial = int(number("initial-scale", init_lo, big, cfg.initial_scale, integer=True))
    activation = int(number("activation-scale", 1, big, 1, integer=True))
    target_ann = number("target", 0.01, big, 0.0)
    utilization_pct = number("target-utilization-percentage", 1, 100, 0.0)
    tbc = number("target-burst-capacity", -1, big, cfg.target_burst_capacity)
    window = duration("window", WINDOW_MIN_SECONDS, WINDOW_MAX_SECONDS, cfg.stable_window)
    panic_pct = number("panic-window-percentage", 1, 100, cfg.panic_window_percentage)
    threshold = number("panic-threshold-percentage", 110, 1000, cfg.panic_threshold_percentage)
    delay = duration("scale-down-delay", 0, 3600, cfg.scale_down_delay)
    duration("scale-to-zero-pod-retention-period", 0, 3600, 0.0)
    if errors:
        return None, errors

    utilization = utilization_pct / 100 if utilization_pct else cfg.target_utilization
    if metric == METRIC_RPS:
        total = target_ann or cfg.requests_per_second_target_default
    else:
        total = cfg.container_concurrency_target_default if cc <= 0 else float(cc)
        if target_ann:
            total = min(target_ann, float(cc)) if cc > 0 else target_ann
    spec = RevisionScalingSpec(
        target_value=max(0.01, total * utilization),
        total_value=total,
        stable_window=window,
        panic_window=max(BUCKET_SECONDS, round(window * panic_pct / 100)),
        panic_threshold=threshold / 100,
        max_scale_up_rate=cfg.max_scale_up_rate,
        max_scale_down_rate=cfg.max_scale_down_rate,
        target_burst_capacity=tbc,
        scale_down_delay=delay,
        min_scale=min_scale,
        max_scale=max_scale,
        initial_scale=initial,
        activation_scale=activation,
        enable_scale_to_zero=cfg.enable_scale_to_zero,
        scale_to_zero_grace_period=max(
            cfg.scale_to_zero_grace_period, cfg.scale_to_zero_pod_retention_period
        ),
        metric=metric,
    )
    return spec, []


def _num(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else str(value)


def _dur(seconds: float) -> str:
    return "1h" if seconds == 3600 else f"{_num(seconds)}s"
