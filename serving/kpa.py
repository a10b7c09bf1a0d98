"""Knative's KPA autoscaler as pure, synchronous objects with an injected clock.

Theory of operation. The caller (the embedded control plane) owns one ``Decider`` per revision.
Every second it ``record``s the revision's observed concurrency (pods' reported concurrency plus
whatever the activator holds); every decision tick (2 s in Knative) it calls ``decide``. The
decider averages its 1 s buckets over the stable window (60 s) and the panic window (6 s), turns
each average into a pod count against the per-revision target, bounds the counts by the max
scale-up/down rates, enters panic when the panic count is at least ``panic_threshold`` times the
ready pods, never scales down while panicking, applies the scale-down delay and finally the
min/max bounds. It reports 0 only after a whole stable window with no traffic; the caller then
keeps the last pod for the grace period with ``ScaleToZeroGate``. Nothing here does I/O; every
method takes ``now`` (seconds, any monotonic origin) so tests run on a fake clock.

The only mutable state is the decider's buckets, panic bookkeeping and delay window, and the
gate's timestamps; each object has a single owner. Configuration and per-revision specs are
frozen values.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

ANNOTATION_PREFIX = "autoscaling.knative.dev/"
KPA_CLASS = "kpa.autoscaling.knative.dev"
METRIC_CONCURRENCY = "concurrency"
METRIC_RPS = "rps"
#: Knative's bounds on the ``window`` annotation.
WINDOW_MIN_SECONDS = 6.0
WINDOW_MAX_SECONDS = 3600.0
#: Knative's stats bucket: one aggregated value per second.
BUCKET_SECONDS = 1.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (``"6s"``, ``"1m30s"``, ``"500ms"``, ``"0"``) into seconds.

    Raises ``ValueError`` for anything else, including negative or unit-less non-zero values.
    """
    text = text.strip()
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


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


# --- the decider -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """One scaling decision. ``excess_burst_capacity`` < 0 means keep the activator in the path."""

    desired_pods: int
    panic: bool
    stable_concurrency: float
    panic_concurrency: float
    excess_burst_capacity: int


class Decider:
    """Knative's KPA decision for one revision (see the module docstring).

    ``record`` adds to the 1 s bucket ``floor(now)``, so a caller may record each source
    (pods, activator) separately or the total once. Buckets the caller skipped count as zero.
    Creating the decider counts as activity: a new revision gets a whole stable window before
    it may be scaled to zero, as Knative's KPA holds a freshly active revision for that long.
    """

    def __init__(self, spec: RevisionScalingSpec, now: float) -> None:
        self.spec = spec
        self._buckets: dict[int, float] = {}
        self._first_bucket: int | None = None
        self._last_traffic = now
        self._panic_since: float | None = None
        self._max_panic_pods = 0
        self._delay: deque[tuple[float, int]] = deque()
        self._initialized = spec.initial_scale == 0
        self.last: Decision | None = None

    def __repr__(self) -> str:
        last = self.last.desired_pods if self.last else None
        return (
            f"<Decider target={self.spec.target_value:g} desired={last} "
            f"panic={self._panic_since is not None} buckets={len(self._buckets)}>"
        )

    def record(self, now: float, concurrency: float) -> None:
        """Add ``concurrency`` observed at ``now`` to its 1 s bucket."""
        bucket = math.floor(now / BUCKET_SECONDS)
        self._buckets[bucket] = self._buckets.get(bucket, 0.0) + concurrency
        if self._first_bucket is None:
            self._first_bucket = bucket
        if concurrency > 0:
            self._last_traffic = max(self._last_traffic, now)
        keep_from = bucket - self._window_buckets(self.spec.stable_window)
        for old in [b for b in self._buckets if b < keep_from]:
            del self._buckets[old]

    def average(self, now: float, window: float) -> float:
        """Mean over the buckets of ``window`` ending at ``now``; before the window has filled,
        over the buckets since the first record (Knative's ``WindowAverage``)."""
        if self._first_bucket is None:
            return 0.0
        current = math.floor(now / BUCKET_SECONDS)
        size = self._window_buckets(window)
        total = sum(v for b, v in self._buckets.items() if current - size < b <= current)
        if total <= 0:
            return 0.0
        return total / max(1, min(size, current - self._first_bucket + 1))

    def decide(self, now: float, ready_pods: int, *, reachable: bool = True) -> Decision:
        """Compute the desired pod count at ``now`` for ``ready_pods`` ready pods.

        ``reachable`` is false when no route sends traffic to the revision: it may then be
        scaled down without the down-rate limit and without its min-scale floor.
        """
        spec = self.spec
        stable = self.average(now, spec.stable_window)
        panic_value = self.average(now, spec.panic_window)
        ready = max(1, ready_pods)
        max_up = math.ceil(spec.max_scale_up_rate * ready)
        max_down = math.floor(ready / spec.max_scale_down_rate) if reachable else 0
        stable_want = math.ceil(stable / spec.target_value)
        panic_want = math.ceil(panic_value / spec.target_value)
        stable_pods = min(max(stable_want, max_down), max_up)
        panic_pods = min(max(panic_want, max_down), max_up)
        if spec.activation_scale > 1:
            if stable_want > 0:
                stable_pods = max(stable_pods, spec.activation_scale)
            if panic_want > 0:
                panic_pods = max(panic_pods, spec.activation_scale)

        if panic_want / ready >= spec.panic_threshold:
            self._panic_since = now  # entering or extending panic
        elif self._panic_since is not None and self._panic_since + spec.stable_window < now:
            self._panic_since = None  # the surge is now part of the stable average
            self._max_panic_pods = 0

        desired = stable_pods
        panicking = self._panic_since is not None
        if panicking:
            desired = max(desired, panic_pods)
            if desired > self._max_panic_pods:
                self._max_panic_pods = desired
            desired = self._max_panic_pods  # panic never scales down

        if spec.scale_down_delay > 0:
            self._delay.append((now, desired))
            while self._delay[0][0] <= now - spec.scale_down_delay:
                self._delay.popleft()
            desired = max(value for _, value in self._delay)

        desired = self._bound(now, desired, ready_pods, reachable)
        decision = Decision(
            desired_pods=desired,
            panic=panicking,
            stable_concurrency=stable,
            panic_concurrency=panic_value,
            excess_burst_capacity=self._excess_burst_capacity(ready_pods, panic_value),
        )
        self.last = decision
        return decision

    def poke(self, now: float, ready_pods: int = 0) -> Decision | None:
        """Decide at once when the last decision was zero and traffic has arrived since.

        Returns ``None`` when there is nothing to do. Otherwise the decision wants at least one
        pod (and at least activation-scale, min-scale and, before it was first reached,
        initial-scale), capped by max-scale.
        """
        if self.last is not None and self.last.desired_pods > 0:
            return None
        if self.average(now, self.spec.panic_window) <= 0:
            return None
        decision = self.decide(now, ready_pods)
        floor = max(1, self.spec.activation_scale, self.spec.min_scale)
        if self.spec.max_scale:
            floor = min(floor, self.spec.max_scale)
        if decision.desired_pods < floor:
            decision = replace(decision, desired_pods=floor)
            self.last = decision
        return decision

    def _bound(self, now: float, desired: int, ready_pods: int, reachable: bool) -> int:
        spec = self.spec
        if desired == 0:
            idle_for_window = now - self._last_traffic >= spec.stable_window
            if not spec.enable_scale_to_zero:
                desired = 1
            elif not idle_for_window:
                desired = min(1, ready_pods)
        if not self._initialized:
            if ready_pods >= spec.initial_scale:
                self._initialized = True
            else:
                desired = max(desired, spec.initial_scale)
        if reachable:
            desired = max(desired, spec.min_scale)
        if spec.max_scale:
            desired = min(desired, spec.max_scale)
        return desired

    def _excess_burst_capacity(self, ready_pods: int, panic_value: float) -> int:
        tbc = self.spec.target_burst_capacity
        if tbc == 0:
            return 0
        if tbc < 0:
            return -1
        return math.floor(ready_pods * self.spec.total_value - tbc - panic_value)

    @staticmethod
    def _window_buckets(window: float) -> int:
        return max(1, round(window / BUCKET_SECONDS))


class ScaleToZeroGate:
    """Keeps the last pod for the grace period after the decider first wants zero.

    Knative removes the last pod only once ``max(scale-to-zero-grace-period, retention)`` has
    passed since the revision went inactive, so the activator is in the path before the pod
    goes. ``apply`` turns the decider's wish into the pod count to run now; ``remove_at`` says
    when the last pod may go (``None`` when no removal is pending).
    """

    def __init__(self, grace_period: float) -> None:
        self.grace_period = grace_period
        self._zero_since: float | None = None

    def __repr__(self) -> str:
        return f"<ScaleToZeroGate grace={self.grace_period:g} remove_at={self.remove_at}>"

    @property
    def remove_at(self) -> float | None:
        return None if self._zero_since is None else self._zero_since + self.grace_period

    def apply(self, now: float, desired: int, current_pods: int) -> int:
        """The pod count to run: ``desired`` except that a wish for 0 keeps 1 pod until the
        grace period has passed."""
        if desired > 0 or current_pods == 0:
            self._zero_since = None
            return desired
        if self._zero_since is None:
            self._zero_since = now
        return 0 if now >= self._zero_since + self.grace_period else 1
