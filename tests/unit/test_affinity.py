"""Header rules and sticky revisions (pure parts): the choice, its spread, its input checks."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest

from activator.affinity import cookie_value, hash_fraction
from activator.affinity_config import (
    PolicyError,
    header_rules,
    route_policy_from_annotations,
    server_timing_from_annotations,
    sticky,
)
from activator.kube.ingress import SLUICE_INGRESS_CLASS, decode_ingress, host_rules
from activator.kube.objects import DecodeError
from activator.model import HeaderRule, Revision, Route, RoutingConfig, Stickiness, TrafficTarget
from activator.routing import RouteDecision, RouteTable
from activator.static_yaml import ConfigError, parse_config
from proxy.exchange import Exchange
from serving.manifest import ManifestError, ServiceManifest
from serving.manifest_loader import load_manifests, parse_service
from serving.revisions import REASON_REVISION_MISSING, plan_revision, resolve_route, set_ready
from serving.state import (
    ClusterState,
    ServiceRecord,
    _route_from_dict,
    _route_to_dict,
    routed_revisions,
)
from tests.unit.test_kube_ingress import kingress

NS = "default"
HOST = b"hello.default.localhost"


@dataclass
class FakeExchange:
    """What ``Affinity.choose`` reads of an exchange: lower-case names and the raw pairs."""

    pairs: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def names(self) -> list[bytes]:
        return [k.lower() for k, _ in self.pairs]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.pairs


def table(
    traffic: tuple[TrafficTarget, ...] = (TrafficTarget("v1", 90), TrafficTarget("v2", 10)),
    pin: Stickiness | None = None,
    rules: tuple[HeaderRule, ...] = (),
    tag_header_routing: bool = True,
) -> RouteTable:
    revisions = tuple(Revision(n, NS) for n in ("v1", "v2", "v3"))
    route = Route("hello", NS, traffic, pin, rules)
    return RouteTable.build(
        RoutingConfig(tag_header_routing=tag_header_routing, routes=(route,), revisions=revisions)
    )


def choose(
    t: RouteTable,
    headers: list[tuple[bytes, bytes]],
    rand: Any = random.random,
    tag: bytes | None = None,
) -> tuple[RouteDecision, tuple[tuple[bytes, bytes], ...]]:
    picked = t.resolve_raw(HOST, tag, rand)
    assert picked is not None
    if picked.policy is None:
        return picked, ()
    return picked.policy.choose(cast(Exchange, FakeExchange(headers)), picked)


COOKIE = Stickiness("cookie", "sluice-hello", 600)


def test_routes_without_the_features_carry_no_policy() -> None:
    decision = table().resolve_raw(HOST, None, lambda: 0.5)
    assert decision is not None and decision.policy is None


def test_thousand_cookie_clients_split_ninety_ten_and_keep_their_revision() -> None:
    t = table(pin=COOKIE)
    rng = random.Random(16)
    first: Counter[str] = Counter()
    for _ in range(1000):
        decision, reply = choose(t, [], rng.random)
        ((name, value),) = reply
        assert name == b"Set-Cookie"
        assert value == b"sluice-hello=%s; Max-Age=600; Path=/; HttpOnly; SameSite=Lax" % (
            decision.revision.encode()
        )
        cookie = value.split(b";")[0]
        first[decision.revision] += 1
        for _ in range(19):
            again, reply = choose(t, [(b"Cookie", b"a=b; " + cookie)], rng.random)
            assert (again.revision, reply) == (decision.revision, ())
    assert 870 <= first["v1"] <= 930
    assert 70 <= first["v2"] <= 130


@pytest.mark.parametrize("value", [b"v3", b"nope", b""])
def test_a_cookie_naming_an_unknown_or_zero_percent_revision_is_replaced(value: bytes) -> None:
    t = table(traffic=(TrafficTarget("v1", 100), TrafficTarget("v3", 0, tag="old")), pin=COOKIE)
    decision, reply = choose(t, [(b"Cookie", b"sluice-hello=" + value)])
    assert decision.revision == "v1"
    assert reply[0][1].startswith(b"sluice-hello=v1;")


def test_a_pin_survives_a_changed_split_and_drops_at_zero_percent() -> None:
    cookie = [(b"Cookie", b"sluice-hello=v2")]
    moved = table(traffic=(TrafficTarget("v1", 50), TrafficTarget("v2", 50)), pin=COOKIE)
    assert choose(moved, cookie, lambda: 0.0) == (choose(moved, cookie)[0], ())
    assert choose(moved, cookie, lambda: 0.0)[0].revision == "v2"
    gone = table(traffic=(TrafficTarget("v1", 100), TrafficTarget("v2", 0)), pin=COOKIE)
    decision, reply = choose(gone, cookie)
    assert decision.revision == "v1" and reply


def test_header_pins_spread_as_the_percents_and_never_move() -> None:
    t = table(pin=Stickiness("header", "x-user"))
    seen: Counter[str] = Counter()
    for i in range(1000):
        user = [(b"X-User", b"client-%d" % i)]
        decision, reply = choose(t, user)
        assert reply == ()
        seen[decision.revision] += 1
        assert {choose(t, user)[0].revision for _ in range(20)} == {decision.revision}
    assert 870 <= seen["v1"] <= 930
    # No header: the weighted pick.
    assert choose(t, [], lambda: 0.95)[0].revision == "v2"


def test_header_rules_come_first_in_order_and_the_tag_header_keeps_its_meaning() -> None:
    rules = (
        HeaderRule("x-beta", "yes", tag="beta"),
        HeaderRule("x-beta", "yes", revision="v1"),
        HeaderRule("x-region", "eu", revision="v3"),
    )
    traffic = (TrafficTarget("v1", 100), TrafficTarget("v2", 0, tag="beta"))
    t = table(traffic=traffic, pin=COOKIE, rules=rules)
    beta, reply = choose(t, [(b"X-Beta", b"yes")])
    assert (beta.revision, beta.set_headers, reply) == (
        "v2", (("Knative-Serving-Tag", "beta"),), (),
    )  # fmt: skip
    assert choose(t, [(b"x-region", b"eu")])[0].revision == "v3"
    assert choose(t, [(b"X-Beta", b"YES")])[0].revision == "v1"  # values match exactly
    # ``Knative-Serving-Tag`` is decided before any rule.
    tagged = choose(t, [(b"x-region", b"eu")], tag=b"beta")[0]
    assert tagged.revision == "v2"


def test_cookie_value_parsing() -> None:
    assert cookie_value([b"a=1; sluice=v1", b"sluice=v2"], b"sluice") == b"v2"
    assert cookie_value([b'sluice="v1"'], b"sluice") == b"v1"
    assert cookie_value([b"xsluice=v1; sluice"], b"sluice") is None
    assert 0.0 <= hash_fraction(b"anything") < 1.0


# ---------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "ip"}, "r.sticky.mode: invalid value 'ip': want cookie or header"),
        ({"mode": "header"}, "r.sticky.header: invalid value None: want a header name"),
        ({"mode": "header", "header": "Host"}, 'r.sticky.header: "Host" is reserved'),
        ({"mode": "cookie", "ttlSeconds": 0}, "r.sticky.ttlSeconds: invalid value 0"),
        ({"mode": "cookie", "cookie": "a b"}, "r.sticky.cookie: invalid value 'a b'"),
        ({"mode": "cookie", "header": "x"}, "r.sticky.header: only for mode header"),
        ({"mode": "cookie", "size": 1}, "r.sticky.size: unknown field"),
    ],
)
def test_bad_stickiness_is_refused_with_its_path(data: object, message: str) -> None:
    with pytest.raises(PolicyError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        sticky(data, "r.sticky", "hello")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"header": "x"}, "h: expected a list, got mapping"),
        ([{"header": "x", "value": "1"}], "h[0]: want exactly one of revisionName and tag"),
        ([{"header": "bad header", "value": "1", "tag": "a"}], "h[0].header: invalid value"),
        ([{"header": "x", "value": 1, "tag": "a"}], "h[0].value: invalid value 1"),
        ([{"header": "x", "value": "1", "tag": "A"}], "h[0].tag: invalid value 'A'"),
        ([{"header": "Knative-Serving-Tag", "value": "1", "tag": "a"}], "h[0].header: "),
        ([{"header": "x", "value": "1", "tag": "a", "weight": 1}], "h[0].weight: unknown"),
    ],
)
def test_bad_header_rules_are_refused_with_their_path(data: object, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        header_rules(data, "h")
    assert str(info.value).startswith(message)


def test_annotations_spell_the_same_policy() -> None:
    pin, rules = route_policy_from_annotations(
        {
            "sluice.dev/sticky": "header",
            "sluice.dev/sticky-header": "X-User",
            "sluice.dev/header-routes": '[{"header": "X-Beta", "value": "yes", "tag": "beta"}]',
        },
        "metadata.annotations",
        "hello",
    )
    assert pin == Stickiness("header", "x-user")
    assert rules == (HeaderRule("x-beta", "yes", tag="beta"),)
    assert route_policy_from_annotations({"sluice.dev/sticky": "cookie"}, "m", "hi")[0] == (
        Stickiness("cookie", "sluice-hi")
    )
    for given, message in [
        ({"sluice.dev/sticky": "header"}, "m[sluice.dev/sticky-header]: invalid value None"),
        ({"sluice.dev/sticky-ttl-seconds": "5"}, "m[sluice.dev/sticky-ttl-seconds]: needs"),
        ({"sluice.dev/sticky": "cookie", "sluice.dev/sticky-ttl-seconds": "1h"},
         "m[sluice.dev/sticky-ttl-seconds]: invalid value '1h'"),
        ({"sluice.dev/header-routes": "[a"}, "m[sluice.dev/header-routes]: invalid YAML"),
        ({"sluice.dev/header-routes": "- {header: x, value: '1'}"},
         "m[sluice.dev/header-routes][0]: want exactly one"),
    ]:  # fmt: skip
        with pytest.raises(PolicyError) as info:
            route_policy_from_annotations(given, "m", "hi")
        assert str(info.value).startswith(message), str(info.value)
    assert server_timing_from_annotations({"sluice.dev/server-timing": "True"}, "m")
    with pytest.raises(PolicyError, match=r"m\[sluice.dev/server-timing\]: invalid value 'on'"):
        server_timing_from_annotations({"sluice.dev/server-timing": "on"}, "m")


STATIC: dict[str, Any] = {
    "revisions": [{"name": "v1", "namespace": NS}, {"name": "v2", "namespace": NS}],
    "routes": [
        {
            "name": "hello",
            "namespace": NS,
            "traffic": [{"revisionName": "v1", "percent": 90},
                        {"revisionName": "v2", "percent": 10, "tag": "canary"}],
        }
    ],
}  # fmt: skip


def static(**route: object) -> dict[str, Any]:
    data: dict[str, Any] = {**STATIC, "routes": [{**STATIC["routes"][0], **route}]}
    return data


def test_static_source_reads_rules_stickiness_and_server_timing() -> None:
    cfg = parse_config(
        static(
            sticky={"mode": "cookie", "ttlSeconds": 60},
            headerRoutes=[
                {"header": "X-Beta", "value": "1", "tag": "canary"},
                {"header": "X-Old", "value": "1", "revisionName": "v1"},
            ],
        )
        | {
            "revisions": [
                {"name": "v1", "namespace": NS, "serverTiming": True},
                {"name": "v2", "namespace": NS},
            ]
        }
    )
    (route,) = cfg.routes
    assert route.sticky == Stickiness("cookie", "sluice-hello", 60)
    assert [r.tag or r.revision for r in route.header_rules] == ["canary", "v1"]
    assert [r.server_timing for r in cfg.revisions] == [True, False]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"headerRoutes": [{"header": "x", "value": "1", "revisionName": "v9"}]},
         'routes[0].headerRoutes[0].revisionName: revision "v9" not found in namespace'),
        ({"headerRoutes": [{"header": "x", "value": "1", "tag": "beta"}]},
         'routes[0].headerRoutes[0].tag: tag "beta" not found in routes[0].traffic'),
        ({"sticky": {"mode": "sometimes"}}, "routes[0].sticky.mode: invalid value"),
    ],
)  # fmt: skip
def test_static_source_refuses_bad_rules_like_bad_targets(
    route: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(static(**route))
    assert str(info.value).startswith(message)


HELLO = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  annotations:
ANNOTATIONS
spec:
  template:
    metadata:
      annotations:
        sluice.dev/server-timing: "TIMING"
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
"""


def manifest(annotations: str, timing: str = "true") -> str:
    return HELLO.replace("ANNOTATIONS", annotations).replace("TIMING", timing)


def test_manifests_with_good_annotations_load() -> None:
    text = manifest('    sluice.dev/sticky: cookie\n    sluice.dev/sticky-ttl-seconds: "60"')
    (svc,) = load_manifests(text, "s.yaml")
    assert svc.annotations["sluice.dev/sticky"] == "cookie"


@pytest.mark.parametrize(
    ("annotations", "timing", "path"),
    [
        ("    sluice.dev/sticky: always", "true", "metadata.annotations[sluice.dev/sticky]"),
        ("    sluice.dev/header-routes: '{a: 1}'", "true",
         "metadata.annotations[sluice.dev/header-routes]"),
        ("    a: b", "yes", "spec.template.metadata.annotations[sluice.dev/server-timing]"),
    ],
)  # fmt: skip
def test_malformed_annotations_refuse_the_manifest_with_the_field_path(
    annotations: str, timing: str, path: str
) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifests(manifest(annotations, timing), "s.yaml")
    assert any(path in m for m in info.value.messages), info.value.messages


# -------------------------------------------------------------- the embedded control plane


def _service(annotations: dict[str, str]) -> ServiceManifest:
    return parse_service(
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "hello", "namespace": NS, "annotations": annotations},
            "spec": {
                "template": {"spec": {"containers": [{"image": "x", "command": ["app"]}]}},
                "traffic": [
                    {"latestRevision": True, "percent": 100},
                    {"latestRevision": True, "percent": 0, "tag": "beta"},
                ],
            },
        }
    )


@pytest.mark.parametrize(
    ("rule", "missing"),
    [
        ('[{header: x, value: "1", revisionName: hello-00009}]',
         'Revision "hello-00009" referenced in header routes not found'),
        ('[{header: x, value: "1", tag: gamma}]',
         'tag "gamma" referenced in header routes not found in traffic'),
    ],
)  # fmt: skip
def test_a_rule_to_a_missing_revision_or_tag_leaves_the_route_unresolved(
    rule: str, missing: str
) -> None:
    svc = _service({"sluice.dev/header-routes": rule})
    plan = plan_revision((), svc)
    result = resolve_route(svc, set_ready(plan.history, plan.revision.name))
    assert (result.resolved, result.reason, result.message) == (
        False, REASON_REVISION_MISSING, missing,
    )  # fmt: skip


def test_resolved_routes_carry_the_policy_and_keep_it_through_the_state_file() -> None:
    svc = _service(
        {
            "sluice.dev/sticky": "cookie",
            "sluice.dev/sticky-ttl-seconds": "90",
            "sluice.dev/header-routes": "- {header: X-Beta, value: 'yes', tag: beta}",
        }
    )
    plan = plan_revision((), svc)
    route = resolve_route(svc, set_ready(plan.history, plan.revision.name)).route
    assert route is not None
    assert route.sticky == Stickiness("cookie", "sluice-hello", 90)
    assert route.header_rules == (HeaderRule("x-beta", "yes", tag="beta"),)
    assert _route_from_dict(_route_to_dict(route)) == route
    header = replace(route, sticky=Stickiness("header", "x-user"), header_rules=())
    assert _route_from_dict(_route_to_dict(header)) == header


def test_a_revision_only_a_header_rule_names_counts_as_routed() -> None:
    svc = _service({})
    route = Route(
        "hello", NS, (TrafficTarget("hello-00001", 100),),
        header_rules=(HeaderRule("x", "1", revision="hello-00002"),),
    )  # fmt: skip
    state = ClusterState({svc.key: ServiceRecord(svc, (), route)})
    assert routed_revisions(state) == {(NS, "hello-00001"), (NS, "hello-00002")}


# ------------------------------------------------------------------- Kubernetes ingress mode


def _kingress(annotations: dict[str, str]) -> dict[str, Any]:
    ingress = kingress()
    ingress["metadata"]["annotations"].update(annotations)
    return ingress


def test_ingress_mode_reads_the_routes_annotations_from_its_ingress() -> None:
    info = decode_ingress(
        _kingress(
            {
                "sluice.dev/sticky": "header",
                "sluice.dev/sticky-header": "X-User",
                "sluice.dev/header-routes": "- {header: X-Beta, value: 'yes', tag: canary}",
            }
        ),
        SLUICE_INGRESS_CLASS,
    )
    assert info is not None
    assert info.sticky == Stickiness("header", "x-user")
    t = RouteTable.build(RoutingConfig(), "cluster.local")
    t.put_rules(info.key, host_rules(info))
    host = b"hello.default.svc.cluster.local"
    picked = t.resolve_raw(host, None, lambda: 0.0)
    assert picked is not None and picked.policy is not None
    beta, _ = picked.policy.choose(cast(Exchange, FakeExchange([(b"x-beta", b"yes")])), picked)
    assert (beta.revision, beta.set_headers) == (
        "hello-00002", (("Knative-Serving-Tag", "canary"),),
    )  # fmt: skip
    seen: Counter[str] = Counter()
    for i in range(1000):
        ex = cast(Exchange, FakeExchange([(b"X-User", b"u%d" % i)]))
        seen[picked.policy.choose(ex, picked)[0].revision] += 1
    assert 870 <= seen["hello-00001"] <= 930
    # The tag host has no policy: its one split is never pinned elsewhere.
    tag_host = t.resolve_raw(b"canary-hello.default.svc.cluster.local", None, lambda: 0.0)
    assert tag_host is not None and tag_host.policy is None


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"sluice.dev/sticky": "always"}, "metadata.annotations[sluice.dev/sticky]: invalid"),
        ({"sluice.dev/header-routes": "- {header: x, value: '1', tag: beta}"},
         'metadata.annotations[sluice.dev/header-routes][0].tag: tag "beta" not found'),
        ({"sluice.dev/header-routes": "- {header: x, value: '1', revisionName: hello-9}"},
         "metadata.annotations[sluice.dev/header-routes][0].revisionName: revision"),
    ],
)  # fmt: skip
def test_ingress_with_bad_annotations_is_skipped_naming_the_field(
    annotations: dict[str, str], message: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode_ingress(_kingress(annotations), SLUICE_INGRESS_CLASS)
    assert str(info.value).startswith(message), str(info.value)
