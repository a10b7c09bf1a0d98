"""The container runtime choice and the one `run` command line, as pure values."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from serving.containers import (
    RuntimeError_,
    container_name,
    detect_runtime,
    owner_id,
    run_argv,
    sweep,
)
from serving.manifest import Container, EnvVar
from serving.podspec import PodPorts, build_pod_plan
from serving.quantity import cpu_cores, memory_bytes, parse_quantity


def which_of(*present: str):  # type: ignore[no-untyped-def]
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_detect_prefers_podman_with_cgroupfs_and_runc() -> None:
    rt = detect_runtime("", which_of("podman", "docker", "runc"))
    assert rt is not None and rt.kind == "podman"
    assert rt.global_flags == ("--cgroup-manager=cgroupfs", "--runtime", "runc")


def test_detect_none_and_process() -> None:
    assert detect_runtime("", which_of()) is None
    assert detect_runtime("process", which_of("podman")) is None


def test_missing_runtime_names_what_was_tried() -> None:
    with pytest.raises(RuntimeError_, match="--runtime podman: podman not found"):
        detect_runtime("podman", which_of("docker"))
    with pytest.raises(RuntimeError_, match="expected one of"):
        detect_runtime("rkt", which_of())


def test_run_argv_publishes_container_port_and_env() -> None:
    rt = detect_runtime("docker", which_of("docker"))
    assert rt is not None
    c = Container(image="localhost/app:1", container_port=9000)
    argv = run_argv(rt, c, name="n", host_port=4321, env={"PORT": "9000"}, args=("-v",))
    assert argv[:2] == ("/usr/bin/docker", "run")
    assert "127.0.0.1:4321:9000" in argv and "PORT=9000" in argv
    assert argv[-2:] == ("localhost/app:1", "-v")


def test_plan_for_image_runs_the_runtime_with_container_port() -> None:
    from serving.manifest import RevisionTemplate

    rt = detect_runtime("podman", which_of("podman"))
    c = Container(image="localhost/app:1", args=("--port=$(PORT)",), env=(EnvVar("A", "$(B)"),))
    t = RevisionTemplate(container=c)
    plan = build_pod_plan(
        t,
        namespace="default",
        service="s",
        revision="s-00001",
        pod="s-00001-deployment-1",
        ports=PodPorts(1, 2, 3, 4, 5, 6),
        workdir="/",
        base_env={},
        runtime=rt,
    )
    argv = plan.user.argv
    assert argv[0] == "/usr/bin/podman" and "127.0.0.1:1:8080" in argv
    assert "PORT=8080" in argv and "K_REVISION=s-00001" in argv
    assert argv[-2:] == ("localhost/app:1", "--port=8080")
    assert plan.queue_proxy.env["USER_PORT"] == "1"


def test_crash_reason_is_the_last_log_line(tmp_path: Path) -> None:
    from serving.pods import last_log_line

    log = tmp_path / "a.log"
    assert last_log_line(log) == ""
    log.write_text("starting\nError: initializing source docker://x: no such host\n\n")
    assert last_log_line(log) == "Error: initializing source docker://x: no such host"


def test_limits_owner_label_and_name_reach_the_run_command() -> None:
    rt = detect_runtime("podman", which_of("podman"))
    assert rt is not None
    c = Container(image="i", limits=(("cpu", "500m"), ("memory", "128Mi")))
    argv = run_argv(rt, c, name="sluice-ab12-default-p", host_port=1, env={}, args=(),
                    owner="ab12")  # fmt: skip
    assert "--cpus=0.5" in argv and "--memory=134217728" in argv
    assert argv[argv.index("io.sluice.owner=ab12") - 1] == "--label"
    assert container_name("default", "p", "ab12") == "sluice-ab12-default-p"
    assert owner_id(Path("/a/state")) != owner_id(Path("/b/state"))


def test_sweep_removes_only_this_owners_containers() -> None:
    rt = detect_runtime("podman", which_of("podman"))
    assert rt is not None
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "c1\nc2\n" if "ps" in argv else "", "")

    assert sweep(rt, "ab12", run) == ("c1", "c2")
    assert calls[0][-2:] == ["--filter", "label=io.sluice.owner=ab12"]
    assert calls[1][-4:] == ["rm", "-f", "c1", "c2"]
    calls.clear()
    assert sweep(rt, "none", lambda argv, **kw: subprocess.CompletedProcess(argv, 0, "", "")) == ()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1Ki", Decimal(1024)),
        ("1e3", Decimal(1000)),
        ("1.5G", Decimal(1500000000)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value
    assert memory_bytes("100m") == 1  # a fraction of a byte rounds up, as Kubernetes does
    assert cpu_cores(1) == 1.0


@pytest.mark.parametrize("text", ["abc", "1Xi", "", "5mi", "1..2"])
def test_bad_quantities_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)
