"""The static source file: parsing, defaults and one-line validation errors (reference §3.4)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from activator.model import Revision, Route, RoutingConfig, TrafficTarget
from activator.static_yaml import ConfigError, load_config_file, parse_config

EXAMPLE = """
domain: example.com
tagHeaderBasedRouting: true
queueDepth: 500
routes:
  - name: hello
    namespace: default
    traffic:
      - {revisionName: hello-00001, percent: 90, tag: current}
      - {revisionName: hello-00002, percent: 10, tag: candidate}
revisions:
  - name: hello-00001
    namespace: default
    containerConcurrency: 1
    timeoutSeconds: 120
    responseStartTimeoutSeconds: 30
    idleTimeoutSeconds: 60
    endpoints: ["127.0.0.1:8012", "[::1]:8012", "pod-1.local:8013"]
  - name: hello-00002
    namespace: default
    endpoints: []
scaler:
  url: http://127.0.0.1:9999/stats
"""


def base() -> dict[str, Any]:
    return {
        "routes": [
            {
                "name": "hello",
                "namespace": "default",
                "traffic": [
                    {"revisionName": "hello-00001", "percent": 90, "tag": "current"},
                    {"revisionName": "hello-00002", "percent": 10},
                ],
            }
        ],
        "revisions": [
            {"name": "hello-00001", "namespace": "default"},
            {"name": "hello-00002", "namespace": "default", "endpoints": ["10.0.0.1:8012"]},
        ],
    }


def test_load_example_file(tmp_path: Path) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text(EXAMPLE)
    cfg = load_config_file(path)
    assert cfg == RoutingConfig(
        domain="example.com",
        tag_header_routing=True,
        queue_depth=500,
        routes=(
            Route(
                "hello",
                "default",
                (
                    TrafficTarget("hello-00001", 90, "current"),
                    TrafficTarget("hello-00002", 10, "candidate"),
                ),
            ),
        ),
        revisions=(
            Revision(
                "hello-00001",
                "default",
                container_concurrency=1,
                timeout_seconds=120,
                response_start_timeout_seconds=30,
                idle_timeout_seconds=60,
                endpoints=("127.0.0.1:8012", "[::1]:8012", "pod-1.local:8013"),
            ),
            Revision("hello-00002", "default"),
        ),
        scaler_url="http://127.0.0.1:9999/stats",
    )


@pytest.mark.parametrize("data", [None, {}, {"routes": [], "revisions": []}, {"routes": None}])
def test_empty_config_gets_defaults(data: object) -> None:
    assert parse_config(data) == RoutingConfig()


def test_defaults_for_revision_fields_and_omitted_percent() -> None:
    data = base()
    data["routes"][0]["traffic"] = [
        {"revisionName": "hello-00001", "percent": 100},
        {"revisionName": "hello-00002", "tag": "next"},  # no percent: counts as 0
        {"revisionName": "hello-00001", "percent": 0},  # same revision twice is allowed
    ]
    data["revisions"][0]["timeoutSeconds"] = 0
    cfg = parse_config(data)
    assert cfg.routes[0].traffic[1] == TrafficTarget("hello-00002", 0, "next")
    rev = cfg.revisions[0]
    assert (rev.container_concurrency, rev.timeout_seconds, rev.endpoints) == (0, 300, ())
    assert cfg.domain == "localhost" and cfg.queue_depth == 10000
    assert cfg.tag_header_routing is False and cfg.scaler_url is None


def test_domain_is_lower_cased() -> None:
    data = base()
    data["domain"] = "Example.COM"
    assert parse_config(data).domain == "example.com"


def test_limits_are_accepted() -> None:
    data = base()
    data["revisions"][0].update(
        containerConcurrency=1000, timeoutSeconds=3600, idleTimeoutSeconds=3600
    )
    data["revisions"][1]["endpoints"] = ["h:1", "h:65535"]
    cfg = parse_config(data)
    assert cfg.revisions[0].container_concurrency == 1000
    assert cfg.revisions[0].timeout_seconds == 3600


def set_path(data: dict[str, Any], path: str, value: object) -> None:
    """Set ``a.b[0].c`` style paths in ``data``; ``value is DELETE`` removes the key."""
    node: Any = data
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("bogus", 1, "bogus: unknown field"),
        ("routes[0].hosts", [], "routes[0].hosts: unknown field"),
        ("routes[0].traffic[0].url", "x", "routes[0].traffic[0].url: unknown field"),
        ("revisions[0].image", "x", "revisions[0].image: unknown field"),
        ("scaler", {"uri": "x"}, "scaler.uri: unknown field"),
        ("domain", "not a domain", 'domain: invalid value "not a domain": must be a DNS-1123'),
        ("domain", 5, "domain: expected a string, got int"),
        ("tagHeaderBasedRouting", "yes", "tagHeaderBasedRouting: expected a boolean, got string"),
        ("queueDepth", 0, "queueDepth: invalid value 0: must be > 0"),
        ("queueDepth", 1.5, "queueDepth: expected an integer, got float"),
        ("routes", {}, "routes: expected a list, got mapping"),
        ("routes[0]", "hello", "routes[0]: expected a mapping, got string"),
        ("routes[0].name", DELETE, "routes[0].name: missing field"),
        ("routes[0].namespace", "", "routes[0].namespace: missing field"),
        ("routes[0].name", "Hello", 'routes[0].name: invalid value "Hello": must be a DNS-1123'),
        ("routes[0].name", "a" * 64, "routes[0].name: invalid value"),
        ("routes[0].namespace", "de_fault", "routes[0].namespace: invalid value"),
        ("routes[0].traffic", [], "routes[0].traffic: missing field"),
        ("routes[0].traffic", DELETE, "routes[0].traffic: missing field"),
        (
            "routes[0].traffic[0].percent",
            80,
            "routes[0].traffic: traffic targets sum to 90, want 100",
        ),
        ("routes[0].traffic[0].percent", DELETE, "routes[0].traffic: traffic targets sum to 10,"),
        (
            "routes[0].traffic[0].percent",
            101,
            "routes[0].traffic[0].percent: invalid value 101: must be in [0, 100]",
        ),
        ("routes[0].traffic[1].percent", -10, "routes[0].traffic[1].percent: invalid value -10"),
        (
            "routes[0].traffic[1].percent",
            True,
            "routes[0].traffic[1].percent: expected an integer, got boolean",
        ),
        ("routes[0].traffic[1].percent", "10", "routes[0].traffic[1].percent: expected an integer"),
        (
            "routes[0].traffic[1].tag",
            "Bad_Tag",
            'routes[0].traffic[1].tag: invalid value "Bad_Tag": must be a DNS-1035 label',
        ),
        (
            "routes[0].traffic[1].tag",
            "1st",
            'routes[0].traffic[1].tag: invalid value "1st": must be a DNS-1035',
        ),
        (
            "routes[0].traffic[1].tag",
            "current",
            'routes[0].traffic[1].tag: duplicate tag "current" (also routes[0].traffic[0].tag)',
        ),
        ("routes[0].traffic[1].tag", "t" * 58, "routes[0].traffic[1].tag: host label"),
        (
            "routes[0].traffic[0].revisionName",
            DELETE,
            "routes[0].traffic[0].revisionName: missing field",
        ),
        (
            "routes[0].traffic[0].revisionName",
            "x",
            'routes[0].traffic[0].revisionName: revision "x" not found in namespace "default"',
        ),
        (
            "routes[0].traffic[0].latestRevision",
            True,
            "routes[0].traffic[0].latestRevision: may not set revisionName",
        ),
        (
            "routes[0].traffic[0].configurationName",
            "c",
            "routes[0].traffic[0].configurationName: unknown field",
        ),
        ("revisions[0].name", DELETE, "revisions[0].name: missing field"),
        ("revisions[0].namespace", "Default", "revisions[0].namespace: invalid value"),
        (
            "revisions[0].containerConcurrency",
            -1,
            "revisions[0].containerConcurrency: invalid value -1: must be in [0, 1000]",
        ),
        (
            "revisions[0].containerConcurrency",
            1001,
            "revisions[0].containerConcurrency: invalid value 1001",
        ),
        (
            "revisions[0].timeoutSeconds",
            -1,
            "revisions[0].timeoutSeconds: invalid value -1: must be in [0, 3600]",
        ),
        ("revisions[0].timeoutSeconds", 3601, "revisions[0].timeoutSeconds: invalid value 3601"),
        (
            "revisions[0].idleTimeoutSeconds",
            4000,
            "revisions[0].idleTimeoutSeconds: invalid value 4000",
        ),
        (
            "revisions[0].responseStartTimeoutSeconds",
            301,
            "revisions[0].responseStartTimeoutSeconds: invalid value 301: "
            "must be <= timeoutSeconds (300)",
        ),
        (
            "revisions[0].endpoints",
            "127.0.0.1:80",
            "revisions[0].endpoints: expected a list, got string",
        ),
        (
            "revisions[0].endpoints",
            ["127.0.0.1"],
            "revisions[0].endpoints[0]: invalid value '127.0.0.1': want host:port",
        ),
        ("revisions[0].endpoints", ["127.0.0.1:0"], "revisions[0].endpoints[0]: invalid value"),
        ("revisions[0].endpoints", ["h:65536"], "revisions[0].endpoints[0]: invalid value"),
        ("revisions[0].endpoints", [":80"], "revisions[0].endpoints[0]: invalid value"),
        ("revisions[0].endpoints", ["::1:80"], "revisions[0].endpoints[0]: invalid value"),
        ("revisions[0].endpoints", ["bad host:80"], "revisions[0].endpoints[0]: invalid value"),
        ("revisions[0].endpoints", [8012], "revisions[0].endpoints[0]: invalid value 8012"),
        (
            "revisions[0].endpoints",
            ["a:1", "a:1"],
            'revisions[0].endpoints[1]: duplicate endpoint "a:1"',
        ),
        (
            "revisions[1].name",
            "hello-00001",
            'revisions[1].name: duplicate revision "hello-00001" in namespace "default" '
            "(also revisions[0])",
        ),
        ("scaler.url", "ftp://x", 'scaler.url: invalid value "ftp://x": want an http(s) URL'),
    ],
)
def test_invalid_config_is_rejected_with_field_path(path: str, value: object, message: str) -> None:
    data = base()
    data["scaler"] = {"url": "http://127.0.0.1:9/x"}
    set_path(data, path, value)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^config: expected a mapping, got list$"):
        parse_config([1])


def test_duplicate_route_is_rejected() -> None:
    data = base()
    data["routes"].append(copy.deepcopy(data["routes"][0]))
    with pytest.raises(ConfigError, match=r'^routes\[1\]\.name: duplicate route "hello"'):
        parse_config(data)


def test_same_route_name_in_other_namespace_is_fine() -> None:
    data = base()
    route = copy.deepcopy(data["routes"][0])
    route["namespace"] = "other"
    route["traffic"] = [{"revisionName": "hello-00001", "percent": 100}]
    data["routes"].append(route)
    data["revisions"].append({"name": "hello-00001", "namespace": "other"})
    assert len(parse_config(data).routes) == 2


def test_revision_in_other_namespace_does_not_count() -> None:
    data = base()
    data["revisions"][1]["namespace"] = "other"
    with pytest.raises(
        ConfigError, match=r'revision "hello-00002" not found in namespace "default"'
    ):
        parse_config(data)


def test_tag_host_colliding_with_another_route_is_rejected() -> None:
    data = base()
    data["routes"].append(
        {
            "name": "current-hello",
            "namespace": "default",
            "traffic": [{"revisionName": "hello-00001", "percent": 100}],
        }
    )
    with pytest.raises(ConfigError, match=r"^routes\[1\]\.name: .*collides with routes\[0\]"):
        parse_config(data)


def test_latest_revision_false_is_accepted() -> None:
    data = base()
    data["routes"][0]["traffic"][0]["latestRevision"] = False
    assert parse_config(data).routes[0].traffic[0].revision_name == "hello-00001"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: [", "invalid YAML: "),
        ("- 1\n- 2\n", "config: expected a mapping, got list"),
        ("bogus: 1\n", "bogus: unknown field"),
    ],
)
def test_load_config_file_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path))
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)


def test_load_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "absent.yaml")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_a_revision_protocol_is_http1_by_default_or_h2c() -> None:
    data = base()
    assert parse_config(data).revisions[0].protocol == "http1"
    data["revisions"][0]["protocol"] = "h2c"
    assert parse_config(data).revisions[0].protocol == "h2c"
    data["revisions"][0]["protocol"] = "http2"
    with pytest.raises(ConfigError, match=r"revisions\[0\]\.protocol: invalid value 'http2'"):
        parse_config(data)
