"""What a local pod runs: Knative's queue-proxy environment, the user env, the command."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from serving.manifest import RevisionTemplate
from serving.manifest_loader import parse_service
from serving.podspec import (
    PodPlanError,
    PodPorts,
    build_pod_plan,
    pod_name,
    resolve_command,
    rewritten_probe,
)

PORTS = PodPorts(user=5001, queue=5002, tls=5003, admin=5004, stats=5005, metrics=5006)


def template(container: dict[str, Any], **spec: Any) -> RevisionTemplate:
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {"template": {"spec": {"containers": [container], **spec}}},
    }
    return parse_service(doc).template


def plan(t: RevisionTemplate, workdir: str = "/nonexistent") -> Any:
    return build_pod_plan(
        t,
        namespace="default",
        service="hello",
        revision="hello-00001",
        pod="hello-00001-deployment-1",
        ports=PORTS,
        workdir=workdir,
        base_env={"PATH": "/bin"},
        queue_proxy_argv=("qp",),
    )


def test_queue_proxy_gets_knatives_environment() -> None:
    t = template(
        {"image": "x", "command": ["app"]},
        containerConcurrency=7,
        timeoutSeconds=30,
        responseStartTimeoutSeconds=5,
        idleTimeoutSeconds=9,
    )
    env = plan(t).queue_proxy.env
    assert {k: v for k, v in env.items() if k != "SERVING_READINESS_PROBE"} == {
        "PATH": "/bin",
        "SERVING_NAMESPACE": "default",
        "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": "hello-00001-deployment-1",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": "5002",
        "QUEUE_SERVING_TLS_PORT": "5003",
        "USER_PORT": "5001",
        "CONTAINER_CONCURRENCY": "7",
        "REVISION_TIMEOUT_SECONDS": "30",
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "5",
        "REVISION_IDLE_TIMEOUT_SECONDS": "9",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "info",
        "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
        "SLUICE_ADMIN_PORT": "5004",
        "SLUICE_STATS_PORT": "5005",
        "SLUICE_METRICS_PORT": "5006",
        "SLUICE_DRAIN_QUIET_SECONDS": "1",
        "SLUICE_BIND_HOST": "127.0.0.1",
    }


def test_default_readiness_probe_is_tcp_on_the_user_port() -> None:
    env = plan(template({"image": "x", "command": ["app"]})).queue_proxy.env
    probe = json.loads(env["SERVING_READINESS_PROBE"])
    assert probe["tcpSocket"] == {"host": "127.0.0.1", "port": 5001}
    assert probe["periodSeconds"] == 0


def test_http_probe_port_is_rewritten_to_the_user_port() -> None:
    t = template(
        {
            "image": "x",
            "command": ["app"],
            "ports": [{"containerPort": 8888}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8888}, "periodSeconds": 2},
        }
    )
    probe = rewritten_probe(t.container.readiness_probe, 5001)
    assert probe["httpGet"] == {"path": "/healthz", "port": 5001, "host": "127.0.0.1"}
    assert probe["periodSeconds"] == 2


def test_user_process_gets_port_and_k_variables_and_its_env() -> None:
    t = template(
        {"image": "x", "command": ["app"], "env": [{"name": "TARGET", "value": "World"}],
         "ports": [{"containerPort": 8888}]}
    )  # fmt: skip
    env = plan(t).user.env
    assert env["PORT"] == "5001"  # always the pod's free port, never 8888
    assert env["TARGET"] == "World"
    assert (env["K_SERVICE"], env["K_CONFIGURATION"], env["K_REVISION"]) == (
        "hello",
        "hello",
        "hello-00001",
    )


@pytest.mark.parametrize("word", ["python", "python3", "python3.11"])
def test_python_runs_with_sluices_interpreter(word: str) -> None:
    t = template({"image": "x", "command": [word], "args": ["app.py", "--x"]})
    assert resolve_command(t.container) == (sys.executable, "app.py", "--x")


def test_other_commands_run_as_given() -> None:
    t = template({"image": "x", "command": ["./server", "-p"], "args": ["1"]})
    assert resolve_command(t.container) == ("./server", "-p", "1")


def test_missing_command_without_a_runtime_says_the_image_is_not_run() -> None:
    with pytest.raises(PodPlanError, match=r"does not run images \(image x recorded\)"):
        build_pod_plan(
            template({"image": "x"}),
            namespace="default",
            service="hello",
            revision="hello-00001",
            pod="hello-00001-deployment-1",
            ports=PORTS,
            workdir="/",
            base_env={},
            runtime=None,
        )


def test_workdir_is_used_when_it_exists(tmp_path: Any) -> None:
    p = plan(template({"image": "x", "command": ["app"]}), workdir=str(tmp_path))
    assert p.user.cwd == str(tmp_path)
    assert p.endpoint == "127.0.0.1:5002"


def test_pod_names_count_per_revision() -> None:
    assert pod_name("hello-00001", 3) == "hello-00001-deployment-3"
