"""Host, tag and split routing (reference §3)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from activator.model import Revision, Route, RoutingConfig, TrafficTarget
from activator.routing import (
    DEFAULT_ROUTE_HEADER,
    TAG_HEADER,
    RouteDecision,
    RouteTable,
    normalise_host,
)


def config(
    traffic: tuple[TrafficTarget, ...] | None = None,
    *,
    tag_header_routing: bool = False,
    extra_routes: tuple[Route, ...] = (),
) -> RoutingConfig:
    if traffic is None:
        traffic = (
            TrafficTarget("hello-00001", 90, "current"),
            TrafficTarget("hello-00002", 10, "candidate"),
            TrafficTarget("hello-00003", 0, "next"),
        )
    return RoutingConfig(
        domain="example.com",
        tag_header_routing=tag_header_routing,
        routes=(Route("hello", "default", traffic), *extra_routes),
        revisions=tuple(Revision(f"hello-0000{i}", "default") for i in (1, 2, 3)),
    )


def table(
    traffic: tuple[TrafficTarget, ...] | None = None, *, tag_header_routing: bool = False
) -> RouteTable:
    return RouteTable.build(config(traffic, tag_header_routing=tag_header_routing))


def always(value: float) -> Callable[[], float]:
    return lambda: value


def never() -> float:
    raise AssertionError("rand() must not be called for a single-target host")


def picks(t: RouteTable, host: str, n: int, seed: int = 42, tag: str | None = None) -> Counter[str]:
    rng = random.Random(seed)
    out: Counter[str] = Counter()
    for _ in range(n):
        d = t.resolve(host, tag, rng.random)
        assert d is not None
        out[d.revision] += 1
    return out


def test_ninety_ten_split_is_within_one_and_a_half_points() -> None:
    counts = picks(table(), "hello.default.example.com", 10000)
    assert abs(counts["hello-00001"] / 100 - 90) <= 1.5
    assert abs(counts["hello-00002"] / 100 - 10) <= 1.5
    assert set(counts) == {"hello-00001", "hello-00002"}


def test_zero_percent_target_never_picked_by_default_split() -> None:
    t = table()
    for r in [0.0, 0.5, 0.8999, 0.9, 0.95, 0.99999999]:
        d = t.resolve("hello.default.example.com", None, always(r))
        assert d is not None
        assert d.revision != "hello-00003"


@pytest.mark.parametrize(
    ("r", "want"),
    [(0.0, "hello-00001"), (0.8999, "hello-00001"), (0.9, "hello-00002"), (0.9999, "hello-00002")],
)
def test_weighted_pick_walks_cumulative_percents(r: float, want: str) -> None:
    d = table().resolve("hello.default.example.com", None, always(r))
    assert d == RouteDecision("default", want, ())


@pytest.mark.parametrize(
    "host",
    [
        "hello.default.example.com",
        "hello.default",
        "hello.default.svc",
        "hello.default.svc.cluster.local",
        "HELLO.Default.Example.COM",
        "hello.default.example.com:8080",
        "hello.default.example.com.",
        "hello.default.example.com.:80",
        "hello.default:80",
        "Hello.Default.Svc.Cluster.Local.:8012",
    ],
)
def test_default_hosts_match_ignoring_case_port_and_trailing_dot(host: str) -> None:
    d = table().resolve(host, None, always(0.0))
    assert d == RouteDecision("default", "hello-00001", ())


@pytest.mark.parametrize(
    "host",
    [
        "",
        "hello.example.com",
        "hello.other.example.com",
        "bye.default.example.com",
        "hello",
        "[::1]:80",
        "hello.default.svc.cluster.remote",
        "current-hello.default.other.com",
        "hello.default.example.com.evil",
    ],
)
def test_unknown_host_resolves_to_none(host: str) -> None:
    assert table().resolve(host, None, always(0.0)) is None


def test_cluster_domain_is_configurable() -> None:
    t = RouteTable.build(config(), cluster_domain="corp.internal")
    assert t.resolve("hello.default.svc.corp.internal", None, always(0.0)) is not None
    assert t.resolve("hello.default.svc.cluster.local", None, always(0.0)) is None


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("current-hello.default.example.com", "hello-00001"),
        ("candidate-hello.default.example.com", "hello-00002"),
        ("next-hello.default.example.com", "hello-00003"),  # 0 % but 100 % on its tag host
        ("next-hello.default", "hello-00003"),
        ("next-hello.default.svc", "hello-00003"),
        ("NEXT-hello.default.svc.cluster.local:81", "hello-00003"),
    ],
)
def test_tag_host_routes_all_traffic_to_tagged_revision(host: str, want: str) -> None:
    d = table().resolve(host, None, never)
    assert d == RouteDecision("default", want, ())


@pytest.mark.parametrize(
    ("host", "header", "want"),
    [
        ("hello.default.example.com", "next", "hello-00003"),
        ("hello.default.example.com", "candidate", "hello-00002"),
        ("hello.default", "next", "hello-00003"),
    ],
)
def test_tag_header_selects_tag_when_enabled(host: str, header: str, want: str) -> None:
    d = table(tag_header_routing=True).resolve(host, header, never)
    assert d == RouteDecision("default", want, ())  # a header path adds no headers


@pytest.mark.parametrize("header", ["next", "candidate"])
def test_tag_header_ignored_when_disabled(header: str) -> None:
    counts = picks(table(), "hello.default.example.com", 200, tag=header)
    assert counts["hello-00003"] == 0
    assert counts["hello-00001"] > counts["hello-00002"]


@pytest.mark.parametrize("header", ["unknown", "", "NEXT", " next"])
def test_unknown_tag_header_falls_through_to_default_split(header: str) -> None:
    t = table(tag_header_routing=True)
    d = t.resolve("hello.default.example.com", header, always(0.95))
    assert d == RouteDecision("default", "hello-00002", ((DEFAULT_ROUTE_HEADER, "true"),))


def test_tag_header_ignored_on_tag_host() -> None:
    t = table(tag_header_routing=True)
    d = t.resolve("current-hello.default.example.com", "next", never)
    assert d == RouteDecision("default", "hello-00001", ((TAG_HEADER, "current"),))


@pytest.mark.parametrize(
    ("enabled", "host", "want_headers"),
    [
        (True, "hello.default.example.com", ((DEFAULT_ROUTE_HEADER, "true"),)),
        (True, "candidate-hello.default", ((TAG_HEADER, "candidate"),)),
        (False, "hello.default.example.com", ()),
        (False, "candidate-hello.default", ()),
    ],
)
def test_set_headers_follow_tag_header_routing_flag(
    enabled: bool, host: str, want_headers: tuple[tuple[str, str], ...]
) -> None:
    d = table(tag_header_routing=enabled).resolve(host, None, always(0.95))
    assert d is not None
    assert d.set_headers == want_headers


def test_same_revision_entries_merge_and_single_revision_group_is_forced_to_100() -> None:
    traffic = (
        TrafficTarget("hello-00001", 30),
        TrafficTarget("hello-00001", 20, "a"),
        TrafficTarget("hello-00001", 0, "b"),
    )
    t = table(traffic=traffic)
    for host in ["hello.default", "a-hello.default", "b-hello.default"]:
        assert t.resolve(host, None, never) == RouteDecision("default", "hello-00001", ())


def test_merged_entries_add_their_percents() -> None:
    traffic = (
        TrafficTarget("hello-00001", 25),
        TrafficTarget("hello-00002", 50),
        TrafficTarget("hello-00001", 25),
    )
    counts = picks(table(traffic=traffic), "hello.default", 10000, seed=7)
    assert abs(counts["hello-00001"] / 100 - 50) <= 1.5


def test_rand_of_one_still_returns_last_split() -> None:
    d = table().resolve("hello.default", None, always(1.0))
    assert d is not None and d.revision == "hello-00002"


def test_first_route_wins_a_host_clash() -> None:
    other = Route("current-hello", "default", (TrafficTarget("hello-00002", 100),))
    t = RouteTable.build(config(extra_routes=(other,)))
    d = t.resolve("current-hello.default", None, never)
    assert d is not None and d.revision == "hello-00001"


def test_all_zero_split_with_several_revisions_has_no_default_host() -> None:
    traffic = (TrafficTarget("hello-00001", 0, "a"), TrafficTarget("hello-00002", 0))
    t = table(traffic=traffic)  # not a valid config, but a source might send one
    assert t.resolve("hello.default", None, never) is None
    assert t.resolve("a-hello.default", None, never) is not None


def test_lookup_revision() -> None:
    t = table()
    rev = t.lookup_revision("default", "hello-00002")
    assert rev is not None and rev.name == "hello-00002"
    assert t.lookup_revision("other", "hello-00002") is None
    assert t.lookup_revision("default", "nope") is None


def test_hosts_lists_every_default_and_tag_host() -> None:
    hosts = table().hosts
    assert len(hosts) == 4 * 4
    assert "candidate-hello.default.svc.cluster.local" in hosts


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:1", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("", ""),
    ],
)
def test_normalise_host(raw: str, want: str) -> None:
    assert normalise_host(raw) == want


def test_repr_summarises_the_table() -> None:
    assert repr(table()) == (
        "RouteTable(hosts=16, revisions=3, domain='example.com', tag_header_routing=False)"
    )
