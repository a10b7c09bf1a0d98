"""Cold-start breakdowns: the phase partition, the milestones, the summaries (pure parts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from activator.coldstart import (
    ColdStarts,
    Milestones,
    breakdown,
    percentile,
    server_timing,
    waits_for_capacity,
)
from activator.kube.objects import decode_revision
from activator.kube.source import to_revision
from activator.main import parse_settings
from activator.model import Revision
from activator.throttler import RevisionThrottler
from serving import render
from serving.cli import build_parser

REV = Revision("hello-1", "default")


def names(phases: tuple[tuple[str, float], ...]) -> list[str]:
    return [n for n, _ in phases]


def test_embedded_phases_partition_the_time_to_first_byte() -> None:
    marks = Milestones(decided=10.001, started=10.2, ready=10.5, endpoints=10.52)
    phases = breakdown(10.0, marks, dispatched=10.6, first_byte=10.65)
    assert names(phases) == ["scale", "pod-start", "ready-probe", "held", "first-byte"]
    assert dict(phases) == pytest.approx(
        {"scale": 0.001, "pod-start": 0.199, "ready-probe": 0.3, "held": 0.1, "first-byte": 0.05}
    )
    assert sum(d for _, d in phases) == pytest.approx(0.65)


def test_kubernetes_sees_one_unseen_phase_up_to_the_endpoints() -> None:
    phases = breakdown(5.0, Milestones(endpoints=7.0), dispatched=7.25, first_byte=7.5)
    assert phases == (("kube-startup", 2.0), ("held", 0.25), ("first-byte", 0.25))


def test_milestones_before_the_request_count_zero_and_nothing_goes_negative() -> None:
    # A request that came while the pod was already starting: no scale phase of its own.
    marks = Milestones(decided=1.0, started=1.5, ready=3.0)
    phases = dict(breakdown(2.0, marks, dispatched=3.1, first_byte=3.2))
    assert phases["scale"] == 0.0
    assert phases["pod-start"] == 0.0
    assert phases["ready-probe"] == pytest.approx(1.0)
    assert sum(phases.values()) == pytest.approx(1.2)
    # A pod ready before a request that still queued: all of it is held.
    only_held = dict(breakdown(9.0, Milestones(ready=3.0), dispatched=9.5, first_byte=9.6))
    assert only_held["held"] == pytest.approx(0.5)
    assert all(v >= 0 for v in only_held.values())


def test_no_milestones_is_held_and_first_byte() -> None:
    assert names(breakdown(1.0, Milestones(), 2.0, 2.5)) == ["held", "first-byte"]


def test_a_decision_starts_a_new_activation() -> None:
    now = [0.0]
    cs = ColdStarts(clock=lambda: now[0])
    key = REV.key
    for t, what in ((1.0, "decided"), (2.0, "started"), (3.0, "ready"), (3.5, "started")):
        now[0] = t
        cs.mark(key, what)
    assert cs.marks[key] == Milestones(decided=1.0, started=2.0, ready=3.0)  # first start kept
    now[0] = 10.0
    cs.mark(key, "decided")
    now[0] = 11.0
    cs.mark(key, "started")
    assert cs.marks[key] == Milestones(decided=10.0, started=11.0)
    with pytest.raises(ValueError, match="milestone: unknown 'booted'"):
        cs.mark(key, "booted")


def test_first_byte_records_and_shows_the_header_only_when_enabled() -> None:
    now = [100.0]
    cs = ColdStarts(clock=lambda: now[0])
    seen: list[float] = []
    cs.observers.append(lambda rev, b: seen.append(b.total))
    assert cs.arrived(REV, no_capacity=False) is None
    quiet = cs.arrived(REV, no_capacity=True)
    assert quiet is not None
    now[0] = 100.5
    quiet.dispatched = 100.4
    assert cs.first_byte(quiet) is None  # recorded, not shown
    assert seen == [pytest.approx(0.5)]
    shown = cs.arrived(Revision("hello-1", "default", server_timing=True), no_capacity=True)
    assert shown is not None
    now[0] = 101.0
    shown.dispatched = 101.0
    assert cs.first_byte(shown) == b"held;dur=500.0, first-byte;dur=0.0"
    cs.header_everywhere = True
    assert cs.arrived(REV, no_capacity=True) is not None
    summary = cs.summary(REV.key)
    assert summary["count"] == 2
    assert summary["phases"] == {
        "held": {"p50": 400.0, "p95": 500.0},
        "first-byte": {"p50": 0.0, "p95": 100.0},
    }


def test_server_timing_and_percentile() -> None:
    assert server_timing([("scale", 0.0012), ("held", 0.25)]) == b"scale;dur=1.2, held;dur=250.0"
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.95) == 5.0
    assert percentile([7.0], 0.5) == 7.0


def test_waits_for_capacity_follows_the_throttler() -> None:
    assert waits_for_capacity(None)
    zero = RevisionThrottler(REV, 10)
    assert waits_for_capacity(zero)  # no pod at all
    zero.apply(["127.0.0.1:1"])
    assert not waits_for_capacity(zero)
    zero.waiting = 1
    assert waits_for_capacity(zero)  # others queue already
    one = RevisionThrottler(Revision("hello-1", "default", container_concurrency=1), 10)
    one.apply(["127.0.0.1:1"])
    assert not waits_for_capacity(one)
    taken = one.try_now()
    assert taken is not None
    assert waits_for_capacity(one)  # its one slot is taken
    one.done(taken[0])
    assert not waits_for_capacity(one)


def test_kubernetes_revisions_read_the_server_timing_annotation() -> None:
    rev: dict[str, Any] = {
        "metadata": {
            "name": "r",
            "namespace": "ns",
            "annotations": {"sluice.dev/server-timing": "True"},
        },
        "spec": {"containers": [{}]},
    }
    assert to_revision(decode_revision(rev)).server_timing
    rev["metadata"]["annotations"] = {}
    assert not to_revision(decode_revision(rev)).server_timing


def test_describe_and_top_render_the_cold_starts() -> None:
    now = [0.0]
    cs = ColdStarts(clock=lambda: now[0])
    timing = cs.arrived(REV, no_capacity=True)
    assert timing is not None
    timing.dispatched = now[0] = 0.5
    cs.first_byte(timing)
    summary = cs.summary(REV.key)
    described = render.describe(
        {"name": "hello", "namespace": "default", "url": "http://hello", "traffic": [],
         "revisions": [], "conditions": [], "events": [], "coldStarts": {"hello-1": summary}},
        now=summary["last"][0]["at"] + 5,  # type: ignore[index]
    )  # fmt: skip
    assert "Cold starts (ms):\n  hello-1: 1 kept, total p50 500.0, p95 500.0" in described
    assert "    held         500.0   500.0" in described
    assert "    5s    500.0   500.0   0.0" in described
    row = {"namespace": "default", "name": "hello-1", "traffic": 100, "rps": 0,
           "concurrency": 0, "readyPods": 1, "actual": 1, "desired": 1, "queue": 0}  # fmt: skip
    cold = {**row, "coldStarts": 1, "coldP50Ms": 500.0, "coldP95Ms": 500.0}
    assert render.top({"revisions": [cold]}).splitlines()[-1].endswith("1 500/500")
    assert render.top({"revisions": [row]}).splitlines()[-1].endswith("-")


def test_revisions_that_went_away_are_forgotten() -> None:
    cs = ColdStarts(clock=lambda: 1.0)
    gone = ("default", "gone")
    for key in (REV.key, gone):
        cs.mark(key, "decided")
    timing = cs.arrived(Revision("gone", "default"), no_capacity=True)
    assert timing is not None
    cs.first_byte(timing)
    cs.forget_all_but({REV.key})
    assert list(cs.marks) == [REV.key] and cs.recent == {}
    cs.forget(REV.key)
    assert cs.marks == {}


def test_the_server_timing_flags_reach_the_settings(tmp_path: Path) -> None:
    config = ["--config", str(tmp_path / "a.yaml")]
    assert parse_settings([*config, "--server-timing"], {}).server_timing
    assert not parse_settings(config, {}).server_timing
    up = build_parser().parse_args(["up", "--server-timing"])
    assert up.server_timing
