"""The KPA decider, its configuration and per-revision specs, on a fake clock (plain floats)."""

from __future__ import annotations

import pytest

from serving.autoscaling_config import (
    AutoscalerConfig,
    RevisionScalingSpec,
    annotation_errors,
    parse_autoscaler_overrides,
    parse_duration,
)
from serving.kpa import Decider, ScaleToZeroGate

A = "autoscaling.knative.dev/"


def make(
    annotations: dict[str, str] | None = None,
    cc: int = 0,
    overrides: tuple[str, ...] = (),
    now: float = 0.0,
) -> Decider:
    cfg = parse_autoscaler_overrides(list(overrides))
    spec = RevisionScalingSpec.from_annotations(
        {A + k: v for k, v in (annotations or {}).items()}, cc, cfg
    )
    return Decider(spec, now)


def feed(decider: Decider, start: int, end: int, concurrency: float) -> None:
    """Record ``concurrency`` once per second for seconds ``start`` .. ``end - 1``."""
    for t in range(start, end):
        decider.record(float(t), concurrency)


# --- configuration ----------------------------------------------------------------------------


def test_defaults_are_knatives() -> None:
    cfg = AutoscalerConfig()
    assert (cfg.stable_window, cfg.panic_window_percentage, cfg.panic_threshold_percentage) == (
        60.0,
        10.0,
        200.0,
    )
    assert (cfg.target_utilization, cfg.container_concurrency_target_default) == (0.7, 100.0)
    assert (cfg.target_burst_capacity, cfg.scale_to_zero_grace_period) == (211.0, 30.0)
    assert (cfg.max_scale_up_rate, cfg.max_scale_down_rate) == (1000.0, 2.0)
    assert (cfg.initial_scale, cfg.allow_zero_initial_scale, cfg.enable_scale_to_zero) == (
        1,
        False,
        True,
    )
    assert (cfg.min_scale, cfg.max_scale, cfg.scale_down_delay, cfg.max_scale_limit) == (
        0,
        0,
        0.0,
        0,
    )


@pytest.mark.parametrize(
    ("item", "field", "value"),
    [
        ("stable-window=6s", "stable_window", 6.0),
        ("scale-to-zero-grace-period=1m", "scale_to_zero_grace_period", 60.0),
        ("scale-down-delay=1m30s", "scale_down_delay", 90.0),
        ("enable-scale-to-zero=false", "enable_scale_to_zero", False),
        ("max-scale-up-rate=10", "max_scale_up_rate", 10.0),
        (
            "container-concurrency-target-percentage=80",
            "container_concurrency_target_percentage",
            80,
        ),
        ("target-burst-capacity=-1", "target_burst_capacity", -1.0),
        ("max-scale=5", "max_scale", 5),
    ],
)
def test_overrides_parse_knative_keys(item: str, field: str, value: object) -> None:
    assert getattr(parse_autoscaler_overrides([item]), field) == value


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["bogus=1"], "unknown autoscaler setting 'bogus'"),
        (["stable-window"], "autoscaler override 'stable-window' is not KEY=VALUE"),
        (["stable-window=abc"], "autoscaler setting stable-window: invalid value 'abc'"),
        (["min-scale=1.5"], "autoscaler setting min-scale: invalid value '1.5'"),
        (["enable-scale-to-zero=maybe"], "autoscaler setting enable-scale-to-zero: invalid value"),
        (["panic-threshold-percentage=50"], "panic-threshold-percentage=50.0 must be in [110"),
        (["max-scale-down-rate=1"], "autoscaler setting max-scale-down-rate=1.0 must be in"),
        (["initial-scale=0"], "initial-scale=0 needs allow-zero-initial-scale"),
        (["min-scale=4", "max-scale=3"], "min-scale must not exceed max-scale"),
        (["max-scale-limit=5", "max-scale=6"], "max-scale must not exceed max-scale-limit"),
    ],
)
def test_bad_overrides_fail_with_one_line_naming_the_key(items: list[str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_autoscaler_overrides(items)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_zero_initial_scale_is_allowed_when_enabled() -> None:
    cfg = parse_autoscaler_overrides(["allow-zero-initial-scale=true", "initial-scale=0"])
    assert cfg.initial_scale == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6s", 6.0), ("1m", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("0", 0.0)],
)
def test_durations_parse_like_go(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "-1s", "1x", "s", "1s 2s"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --- per-revision spec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cc", "annotations", "total", "target"),
    [
        (0, {}, 100.0, 70.0),
        (10, {}, 10.0, 7.0),
        (10, {"target": "5"}, 5.0, 3.5),
        (10, {"target": "50"}, 10.0, 7.0),
        (0, {"target": "10", "target-utilization-percentage": "100"}, 10.0, 10.0),
        (0, {"metric": "rps"}, 200.0, 140.0),
        (0, {"target": "0.01", "target-utilization-percentage": "1"}, 0.01, 0.01),
    ],
)
def test_target_is_total_times_utilization(
    cc: int, annotations: dict[str, str], total: float, target: float
) -> None:
    spec = RevisionScalingSpec.from_annotations({A + k: v for k, v in annotations.items()}, cc)
    assert spec.total_value == pytest.approx(total)
    assert spec.target_value == pytest.approx(target)


@pytest.mark.parametrize(
    ("annotations", "stable", "panic", "threshold"),
    [
        ({}, 60.0, 6.0, 2.0),
        ({"window": "10s"}, 10.0, 1.0, 2.0),
        ({"window": "2m", "panic-window-percentage": "20"}, 120.0, 24.0, 2.0),
        ({"panic-threshold-percentage": "300"}, 60.0, 6.0, 3.0),
    ],
)
def test_windows_and_panic_threshold_come_from_annotations(
    annotations: dict[str, str], stable: float, panic: float, threshold: float
) -> None:
    spec = RevisionScalingSpec.from_annotations({A + k: v for k, v in annotations.items()})
    assert (spec.stable_window, spec.panic_window, spec.panic_threshold) == (
        stable,
        panic,
        threshold,
    )


def test_legacy_camel_case_annotations_are_accepted() -> None:
    spec = RevisionScalingSpec.from_annotations({A + "minScale": "2", A + "maxScale": "4"})
    assert (spec.min_scale, spec.max_scale) == (2, 4)


def test_invalid_annotations_raise_with_every_message() -> None:
    with pytest.raises(ValueError) as info:
        RevisionScalingSpec.from_annotations({A + "min-scale": "x", A + "window": "1s"})
    assert len(str(info.value).splitlines()) == 2


def test_max_scale_limit_requires_a_bounded_max_scale() -> None:
    cfg = parse_autoscaler_overrides(["max-scale-limit=10"])
    assert annotation_errors({A + "max-scale": "11"}, cfg) == [
        f"expected 1 <= 11 <= 10: metadata.annotations[{A}max-scale]"
    ]


def test_zero_initial_scale_annotation_needs_the_config_switch() -> None:
    assert annotation_errors({A + "initial-scale": "0"})
    cfg = parse_autoscaler_overrides(["allow-zero-initial-scale=true"])
    assert annotation_errors({A + "initial-scale": "0"}, cfg) == []


# --- the decider ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cc", "annotations", "concurrency", "ready", "desired"),
    [
        (0, {}, 140.0, 2, 2),
        (0, {}, 141.0, 3, 3),
        (0, {}, 350.0, 5, 5),
        (10, {}, 21.0, 3, 3),
        (10, {}, 22.0, 4, 4),
        (0, {"target": "10"}, 14.0, 2, 2),
        (100, {"target-utilization-percentage": "100"}, 250.0, 3, 3),
    ],
)
def test_steady_load_wants_ceil_of_concurrency_over_target(
    cc: int, annotations: dict[str, str], concurrency: float, ready: int, desired: int
) -> None:
    decider = make(annotations, cc)
    feed(decider, 0, 60, concurrency)
    decision = decider.decide(59.5, ready)
    assert decision.desired_pods == desired
    assert not decision.panic
    assert decision.stable_concurrency == pytest.approx(concurrency)


def test_window_average_covers_only_the_time_since_the_first_record() -> None:
    decider = make()
    feed(decider, 100, 110, 70.0)
    assert decider.average(109, 60) == pytest.approx(70.0)
    assert decider.average(129, 60) == pytest.approx(700 / 30)
    assert decider.average(200, 60) == 0.0


def test_a_burst_starts_panic_and_scales_up_at_once() -> None:
    decider = make()
    feed(decider, 0, 54, 7.0)
    feed(decider, 54, 60, 700.0)
    decision = decider.decide(59.5, 1)
    assert decision.panic
    assert decision.panic_concurrency == pytest.approx(700.0)
    assert decision.desired_pods == 10  # ceil(700 / 70); the stable average alone wants 2


def test_panic_never_scales_down_and_ends_after_a_calm_stable_window() -> None:
    decider = make()
    feed(decider, 0, 54, 7.0)
    feed(decider, 54, 60, 700.0)
    assert decider.decide(59.5, 1).desired_pods == 10
    feed(decider, 60, 66, 0.0)
    held = decider.decide(65.5, 10)
    assert (held.panic, held.desired_pods) == (True, 10)
    feed(decider, 66, 120, 0.0)
    assert decider.decide(119.0, 10).desired_pods == 10
    calm = decider.decide(120.0, 10)
    assert (calm.panic, calm.desired_pods) == (False, 5)  # then only the 2x down rate limits


def test_panic_mode_keeps_scaling_up() -> None:
    decider = make()
    feed(decider, 0, 60, 700.0)
    assert decider.decide(59.5, 1).desired_pods == 10
    feed(decider, 60, 66, 1400.0)
    assert decider.decide(65.5, 10).desired_pods == 20


@pytest.mark.parametrize(
    ("now", "desired"),
    [(30.0, 1), (59.0, 1), (60.0, 0)],
)
def test_scale_to_zero_only_after_a_whole_idle_stable_window(now: float, desired: int) -> None:
    decider = make()
    feed(decider, 0, int(now) + 1, 0.0)
    assert decider.decide(now, 1).desired_pods == desired


def test_traffic_restarts_the_idle_window() -> None:
    decider = make()
    feed(decider, 0, 10, 1.0)
    feed(decider, 10, 70, 0.0)
    assert decider.decide(68.5, 1).desired_pods == 1  # the last busy second is still in window
    assert decider.decide(69.0, 1).desired_pods == 0


def test_scale_to_zero_disabled_keeps_one_pod() -> None:
    decider = make(overrides=("enable-scale-to-zero=false",))
    feed(decider, 0, 120, 0.0)
    assert decider.decide(120.0, 1).desired_pods == 1


@pytest.mark.parametrize(
    ("annotations", "concurrency", "ready", "reachable", "desired"),
    [
        ({"min-scale": "2"}, 0.0, 2, True, 2),
        ({"min-scale": "2"}, 0.0, 1, False, 0),
        ({"max-scale": "3"}, 1000.0, 1, True, 3),
        ({"max-scale": "3"}, 1000.0, 3, True, 3),
        ({"min-scale": "1", "max-scale": "3"}, 140.0, 2, True, 2),
    ],
)
def test_min_and_max_scale_bound_the_decision(
    annotations: dict[str, str], concurrency: float, ready: int, reachable: bool, desired: int
) -> None:
    decider = make(annotations)
    feed(decider, 0, 61, concurrency)
    assert decider.decide(60.0, ready, reachable=reachable).desired_pods == desired


def test_initial_scale_holds_until_first_reached() -> None:
    decider = make({"initial-scale": "3"})
    assert decider.decide(0.0, 0).desired_pods == 3
    assert decider.decide(2.0, 2).desired_pods == 3
    assert decider.decide(4.0, 3).desired_pods == 1  # reached: now the 2x down rate applies
    assert decider.decide(6.0, 1).desired_pods == 1


def test_zero_initial_scale_starts_at_zero() -> None:
    cfg_items = ("allow-zero-initial-scale=true", "initial-scale=0")
    decider = make(overrides=cfg_items)
    assert decider.decide(0.0, 0).desired_pods == 0


@pytest.mark.parametrize(
    ("delay", "at_11", "at_16"),
    [("0s", 1, 1), ("10s", 2, 1)],
)
def test_scale_down_delay_keeps_the_highest_recent_decision(
    delay: str, at_11: int, at_16: int
) -> None:
    decider = make({"scale-down-delay": delay}, overrides=("stable-window=6s",))
    feed(decider, 0, 6, 140.0)
    assert decider.decide(5.0, 2).desired_pods == 2
    feed(decider, 6, 17, 0.0)
    assert decider.decide(11.5, 2).desired_pods == at_11
    assert decider.decide(16.0, 2).desired_pods == at_16


@pytest.mark.parametrize(
    ("overrides", "concurrency", "ready", "desired"),
    [
        ((), 7000.0, 1, 100),
        (("max-scale-up-rate=2",), 7000.0, 1, 2),
        (("max-scale-up-rate=2",), 7000.0, 3, 6),
        ((), 0.0, 10, 5),
        (("max-scale-down-rate=5",), 0.0, 10, 2),
        ((), 70.0, 10, 5),
    ],
)
def test_rates_limit_each_step(
    overrides: tuple[str, ...], concurrency: float, ready: int, desired: int
) -> None:
    decider = make(overrides=overrides)
    feed(decider, 0, 61, concurrency)
    assert decider.decide(60.0, ready).desired_pods == desired


@pytest.mark.parametrize(
    ("overrides", "ready", "panic_load", "ebc"),
    [
        ((), 3, 0.0, 89),  # 3 x 100 - 211 - 0
        ((), 3, 50.0, 39),
        ((), 1, 0.0, -111),
        (("target-burst-capacity=0",), 3, 0.0, 0),
        (("target-burst-capacity=-1",), 3, 0.0, -1),
    ],
)
def test_excess_burst_capacity(
    overrides: tuple[str, ...], ready: int, panic_load: float, ebc: int
) -> None:
    decider = make(overrides=overrides)
    feed(decider, 0, 10, panic_load)
    assert decider.decide(9.0, ready).excess_burst_capacity == ebc


def _idle_at_zero(annotations: dict[str, str] | None = None) -> Decider:
    decider = make(annotations)
    feed(decider, 0, 61, 0.0)
    assert decider.decide(60.0, 1).desired_pods == 0
    return decider


@pytest.mark.parametrize(
    ("annotations", "desired"),
    [({}, 1), ({"activation-scale": "3"}, 3), ({"activation-scale": "3", "max-scale": "2"}, 2)],
)
def test_poke_after_zero_wants_pods_at_once(annotations: dict[str, str], desired: int) -> None:
    decider = _idle_at_zero(annotations)
    decider.record(61.0, 1.0)
    decision = decider.poke(61.2)
    assert decision is not None and decision.desired_pods == desired
    assert decider.last == decision


def test_poke_does_nothing_without_traffic_or_when_already_scaled_up() -> None:
    decider = _idle_at_zero()
    assert decider.poke(61.0) is None
    decider.record(61.0, 1.0)
    assert decider.poke(61.2) is not None
    assert decider.poke(61.4) is None


def test_poke_on_a_fresh_decider_decides() -> None:
    decider = make()
    decider.record(0.0, 2.0)
    decision = decider.poke(0.1)
    assert decision is not None and decision.desired_pods == 1


def test_scale_to_zero_gate_keeps_the_last_pod_for_the_grace_period() -> None:
    gate = ScaleToZeroGate(30.0)
    assert gate.apply(100.0, 0, 1) == 1
    assert gate.remove_at == 130.0
    assert gate.apply(129.9, 0, 1) == 1
    assert gate.apply(130.0, 0, 1) == 0
    assert gate.apply(131.0, 0, 0) == 0
    assert gate.remove_at is None


def test_scale_to_zero_gate_resets_when_traffic_returns() -> None:
    gate = ScaleToZeroGate(30.0)
    gate.apply(100.0, 0, 1)
    assert gate.apply(110.0, 2, 1) == 2
    assert gate.remove_at is None
    assert gate.apply(120.0, 0, 2) == 1
    assert gate.remove_at == 150.0
