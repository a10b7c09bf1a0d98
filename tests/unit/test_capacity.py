"""Throttler capacity maths (Knative ``throttler_test.go`` behaviours, reference §5.9)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from activator.capacity import (
    MAX_CAPACITY,
    assign_slice,
    calculate_capacity,
    infer_index,
    pick_indices,
)


@dataclass
class FakeTracker:
    dest: str
    capacity: int = -1

    def update_capacity(self, n: int) -> None:
        self.capacity = n


def trackers(n: int) -> list[FakeTracker]:
    return [FakeTracker(f"ip{i}") for i in range(n)]


@pytest.mark.parametrize(
    ("cc", "backends", "activators", "want"),
    [
        (10, 1, 1, 10),
        (10, 10, 1, 100),
        (10, 100, 1, 1000),
        (10, 10, 5, 20),
        (10, 10, 200, 1),  # never below 1 while there are backends
        (10, 0, 1, 0),
        (10, 0, 0, 0),
        (10, 3, 0, 30),  # activator count unknown yet: treated as 1
        (0, 0, 1, 0),  # CC=0, no pods: infinite breaker closed
        (0, 1, 1, MAX_CAPACITY),  # CC=0 with pods: open
        (0, 5, 3, MAX_CAPACITY),
        (1000, 2**31, 1, MAX_CAPACITY),  # overflow clamps
        (1000, 2**31, 4, MAX_CAPACITY),  # clamped before, not after, dividing
        (2**30, 2, 1, 2**31 - 1),
        # pod mode, cc=10
        (10, 2, 1, 20),
        (10, 2, 2, 10),
        (10, 3, 2, 15),
        # TestPodAssignmentFinite and TestMultipleActivators
        (42, 6, 4, 63),
        (1, 3, 2, 1),
    ],
)
def test_calculate_capacity(cc: int, backends: int, activators: int, want: int) -> None:
    assert calculate_capacity(cc, backends, activators) == want


@pytest.mark.parametrize(
    ("ips", "own", "want"),
    [
        ([], "10.0.0.1", -1),
        (["10.0.0.1"], "10.0.0.2", -1),
        (["10.0.0.1"], "10.0.0.1", 0),
        (["130.0.0.2", "130.0.0.1"], "130.0.0.2", 1),
        (["10.0.0.3", "10.0.0.10", "10.0.0.2"], "10.0.0.10", 0),  # string order, not numeric
        (["10.0.0.3", "10.0.0.10", "10.0.0.2"], "10.0.0.3", 2),
        (["b", "a", "a"], "b", 1),  # duplicates count once
    ],
)
def test_infer_index_is_position_in_sorted_ips(ips: list[str], own: str, want: int) -> None:
    assert infer_index(ips, own) == want


@pytest.mark.parametrize(
    ("trackers", "index", "activators", "want"),
    [
        (1, 0, 1, (0, 1, 0)),
        (5, 0, 1, (0, 5, 0)),
        (10, 0, 3, (0, 3, 1)),
        (10, 1, 3, (3, 6, 1)),
        (10, 2, 3, (6, 9, 1)),
        (11, 2, 3, (6, 9, 2)),
        (9, 2, 3, (6, 9, 0)),
        (2, 0, 3, (0, 1, 0)),  # more activators than pods: one pod each, round robin
        (2, 1, 3, (1, 2, 0)),
        (2, 2, 3, (0, 1, 0)),
        (3, 5, 4, (2, 3, 0)),
        (0, 0, 3, (0, 0, 0)),
    ],
)
def test_pick_indices(
    trackers: int, index: int, activators: int, want: tuple[int, int, int]
) -> None:
    assert pick_indices(trackers, index, activators) == want


def test_assign_slice_of_nothing_is_empty() -> None:
    assert assign_slice([], 0, 3, 10, random.Random(1)) == []


@pytest.mark.parametrize(
    ("index", "activators", "cc"),
    [(-1, 3, 10), (0, 1, 10), (2, 1, 10), (-1, 0, 10), (1, 3, 0)],
    ids=["index-unknown", "one-activator", "one-activator-odd-index", "no-count", "cc-zero"],
)
def test_assign_slice_assigns_everything(index: int, activators: int, cc: int) -> None:
    ts = [FakeTracker("c"), FakeTracker("a"), FakeTracker("b")]
    got = assign_slice(ts, index, activators, cc, random.Random(1))
    assert [t.dest for t in got] == ["a", "b", "c"]
    assert all(t.capacity == cc for t in got)


def test_assign_slice_single_tracker_goes_to_every_activator() -> None:
    ts = trackers(1)
    assert assign_slice(ts, 2, 3, 10, random.Random(1)) == ts


@pytest.mark.parametrize("index", [0, 1, 2])
def test_assign_slice_three_trackers_three_activators_one_each(index: int) -> None:
    ts = trackers(3)
    got = assign_slice(list(reversed(ts)), index, 3, 10, random.Random(1))
    assert got == [ts[index]]
    assert got[0].capacity == 10


@pytest.mark.parametrize(
    ("cc", "want_shared"),
    [(5, 3), (6, 3), (1, 1), (7, 4)],
)
def test_assign_slice_remnant_capacity_is_ceil_cc_over_activators(
    cc: int, want_shared: int
) -> None:
    ts = trackers(3)  # 2 activators: one exclusive each, ip2 shared
    got = assign_slice(ts, 1, 2, cc, random.Random(1))
    assert [t.dest for t in got] == ["ip1", "ip2"]
    assert got[0].capacity == cc
    assert got[1].capacity == want_shared
    assert ts[0].capacity == cc  # unassigned trackers are reset too


def test_pod_assignment_finite_six_pods_four_activators() -> None:
    ts = trackers(6)
    got = assign_slice(ts, 0, 4, 42, random.Random(7))
    assert got[0].dest == "ip0"
    assert {t.dest for t in got} == {"ip0", "ip4", "ip5"}
    assert calculate_capacity(42, len(ts), 4) == 63
    capacities = {t.dest: t.capacity for t in ts}
    assert capacities == {"ip0": 42, "ip1": 42, "ip2": 42, "ip3": 42, "ip4": 11, "ip5": 11}
    assert calculate_capacity(42, 0, 4) == 0  # an empty update zeroes everything


def test_assign_slice_resets_capacities_before_reassigning() -> None:
    ts = trackers(6)
    assign_slice(ts, 0, 4, 42, random.Random(7))
    assign_slice(ts, 0, 1, 42, random.Random(7))  # back to one activator
    assert all(t.capacity == 42 for t in ts)


def test_assign_slice_remnant_order_is_shuffled_by_rng() -> None:
    def pods() -> list[FakeTracker]:
        return [FakeTracker(c) for c in "abcdefghijk"]  # 11 pods, 4 activators: 3 remnants

    orders = {
        tuple(t.dest for t in assign_slice(pods(), 0, 4, 8, random.Random(seed))[2:])
        for seed in range(20)
    }
    assert len(orders) > 1
    assert all(sorted(o) == ["i", "j", "k"] for o in orders)


def test_multiple_activators_share_capacity_down_to_one() -> None:
    # 2 activators, 3 pods, CC=1: each activator may have only one request in flight.
    assert calculate_capacity(1, 3, 2) == 1
    ts = trackers(3)
    got0 = assign_slice(ts, 0, 2, 1, random.Random(1))
    assert [t.dest for t in got0] == ["ip0", "ip2"]
    assert [t.capacity for t in ts] == [1, 1, 1]
