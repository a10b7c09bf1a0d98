"""The embedded KPA inputs: pod stats minus proxied load, activator reports and pokes."""

from __future__ import annotations

from dataclasses import replace

from proxy.dataplane.autoscaler_stat_pb import Stat
from serving.autoscaler import RevisionAutoscaler
from serving.autoscaling_config import AutoscalerConfig, RevisionScalingSpec

CFG = AutoscalerConfig(stable_window=6, scale_to_zero_grace_period=2)


def scaler(cc: int = 10, initial: int = 1, **ann: str) -> RevisionAutoscaler:
    annotations = {f"autoscaling.knative.dev/{k.replace('_', '-')}": v for k, v in ann.items()}
    spec = RevisionScalingSpec.from_annotations(annotations, cc, CFG)
    if initial == 0:
        spec = replace(spec, initial_scale=0)
    return RevisionAutoscaler(spec, 0.0, spec.initial_scale)


def test_pod_concurrency_excludes_what_the_activator_proxied() -> None:
    a = scaler()
    a.activator_stat(0.5, Stat(average_concurrent_requests=4, request_count=40))
    obs = a.observe(1.0, [Stat(average_concurrent_requests=5, average_proxied_concurrent_requests=4,
                               request_count=30)])  # fmt: skip
    assert obs.pod_concurrency == 1
    assert obs.activator_concurrency == 4
    assert obs.concurrency == 5
    assert obs.requests_per_second == 30


def test_a_stale_activator_report_no_longer_counts() -> None:
    a = scaler()
    a.activator_stat(0.0, Stat(average_concurrent_requests=4))
    assert a.observe(10.0, []).concurrency == 0


def test_load_scales_up_within_max_scale() -> None:
    a = scaler(cc=10, max_scale="3")  # target 7 per pod
    for t in range(1, 5):
        a.observe(float(t), [Stat(average_concurrent_requests=50)])
    assert a.tick(4.5, ready_pods=1, current_pods=1, reachable=True) == 3


def test_idle_revision_goes_to_zero_after_window_and_grace() -> None:
    a = scaler()
    for t in range(1, 8):
        a.observe(float(t), [])
    assert a.tick(7.0, 1, 1, reachable=False) == 1  # grace period starts
    assert a.tick(9.5, 1, 1, reachable=False) == 0


def test_poke_at_zero_wants_a_pod_at_once() -> None:
    a = scaler(initial=0)
    a.desired = 0
    assert a.poke(1.0, Stat(average_concurrent_requests=1), ready_pods=0) == 1


def test_poke_with_pods_running_changes_nothing() -> None:
    a = scaler()
    assert a.poke(1.0, Stat(average_concurrent_requests=1), ready_pods=1) is None
