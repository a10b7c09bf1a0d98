"""Knative's activator environment (Kubernetes mode) and the start-up flag rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from activator.kubeenv import KubeEnv, KubeEnvError, cluster_domain, load_kube_env
from activator.main import parse_settings

BASE = {"POD_NAME": "activator-7d9", "POD_IP": "10.0.0.2", "SYSTEM_NAMESPACE": "knative-serving"}


def test_knative_deployment_env_with_defaults(tmp_path: Path) -> None:
    env = load_kube_env(BASE, tmp_path / "no-resolv.conf")
    assert env == KubeEnv("activator-7d9", "10.0.0.2", "knative-serving")
    assert (env.probe_timeout, env.probe_frequency) == (0.3, 0.2)
    assert (env.max_idle_conns, env.max_idle_per_host, env.cluster_domain) == (
        1000,
        100,
        "cluster.local",
    )


def test_every_variable_is_read(tmp_path: Path) -> None:
    env = load_kube_env(
        {
            **BASE,
            "CONFIG_LOGGING_NAME": "my-logging",
            "CONFIG_OBSERVABILITY_NAME": "my-o11y",
            "PROBE_TIMEOUT": "1s",
            "PROBE_FREQUENCY": "50ms",
            "MAX_IDLE_PROXY_CONNS": "10",
            "MAX_IDLE_PROXY_CONNS_PER_HOST": "2",
            "CLUSTER_DOMAIN": "example.internal",
        },
        tmp_path / "none",
    )
    assert (env.config_logging_name, env.config_observability_name) == ("my-logging", "my-o11y")
    assert (env.probe_timeout, env.probe_frequency) == (1.0, 0.05)
    assert (env.max_idle_conns, env.max_idle_per_host) == (10, 2)
    assert env.cluster_domain == "example.internal"


@pytest.mark.parametrize("missing", ["POD_NAME", "POD_IP", "SYSTEM_NAMESPACE"])
def test_a_missing_required_variable_is_named(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(KubeEnvError, match=f"^{missing}: required variable is not set$"):
        load_kube_env(env)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PROBE_TIMEOUT", "300", 'PROBE_TIMEOUT: invalid duration "300"'),
        ("PROBE_FREQUENCY", "0s", 'PROBE_FREQUENCY: invalid duration "0s": must be > 0'),
        ("MAX_IDLE_PROXY_CONNS", "many", 'MAX_IDLE_PROXY_CONNS: invalid value "many"'),
        ("MAX_IDLE_PROXY_CONNS_PER_HOST", "-1", "MAX_IDLE_PROXY_CONNS_PER_HOST: invalid value"),
    ],
)
def test_a_malformed_variable_is_named(name: str, value: str, message: str) -> None:
    with pytest.raises(KubeEnvError, match=message):
        load_kube_env({**BASE, name: value})


def test_cluster_domain_comes_from_the_resolver_search_line_first(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "nameserver 10.96.0.10\n"
        "search knative-serving.svc.corp.example svc.corp.example corp.example\n"
        "options ndots:5\n"
    )
    assert cluster_domain({"CLUSTER_DOMAIN": "ignored.local"}, resolv) == "corp.example"
    assert cluster_domain({"CLUSTER_DOMAIN": "env.local"}, tmp_path / "none") == "env.local"
    assert cluster_domain({}, tmp_path / "none") == "cluster.local"


def test_kubernetes_mode_settings_take_knative_env_and_open_8013() -> None:
    settings = parse_settings([], {**BASE, "PROBE_FREQUENCY": "100ms"})
    assert settings.config is None
    assert (settings.port, settings.h2c_port) == (8012, 8013)
    assert (settings.pod_name, settings.pod_ip) == ("activator-7d9", "10.0.0.2")
    assert settings.probe_interval == 0.1


def test_file_mode_opens_no_second_port_and_needs_no_kubernetes_env(tmp_path: Path) -> None:
    settings = parse_settings(["--config", str(tmp_path / "a.yaml")], {})
    assert settings.h2c_port is None and settings.pod_name == "activator"


def test_kubernetes_mode_without_its_env_names_the_variable() -> None:
    with pytest.raises(KubeEnvError, match="POD_NAME"):
        parse_settings([], {})
