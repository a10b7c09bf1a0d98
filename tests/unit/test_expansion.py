"""Kubernetes' $(VAR) expansion, case by case as the kubelet treats them."""

from __future__ import annotations

import pytest

from serving.expansion import expand, expand_all, expand_env

M = {"PORT": "8080", "NAME": "hello", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("--port=$(PORT)", "--port=8080"),
        ("$(NAME)-$(PORT)", "hello-8080"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("$$(PORT)", "$(PORT)"),
        ("$$$(PORT)", "$8080"),
        ("cost $5", "cost $5"),
        ("trailing $", "trailing $"),
        ("open $(PORT", "open $(PORT"),
        ("x$(EMPTY)y", "xy"),
        ("$PORT", "$PORT"),
        ("", ""),
    ],
)
def test_expand(text: str, want: str) -> None:
    assert expand(text, M) == want


def test_env_sees_only_earlier_entries() -> None:
    env = expand_env([("A", "a"), ("B", "$(A)-$(C)"), ("C", "c")], {"PORT": "1"})
    assert env == {"A": "a", "B": "a-$(C)", "C": "c"}


def test_env_sees_base() -> None:
    assert expand_env([("URL", "http://127.0.0.1:$(PORT)/")], {"PORT": "9"}) == {
        "URL": "http://127.0.0.1:9/"
    }


def test_words() -> None:
    assert expand_all(["serve", "--port", "$(PORT)"], M) == ("serve", "--port", "8080")


def test_pod_plan_expands_port_in_args() -> None:
    from serving.manifest import Container, EnvVar
    from serving.podspec import resolve_command, user_env

    c = Container(
        image="",
        command=("./server",),
        args=("--listen=:$(PORT)", "$(GREETING)"),
        env=(EnvVar("GREETING", "hi $(K_SERVICE)"),),
    )
    env = user_env(c, 4242, "svc", "svc-00001")
    assert resolve_command(c, env) == ("./server", "--listen=:4242", "hi $(K_SERVICE)")
