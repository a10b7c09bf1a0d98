"""Failure reasons in Knative's words: exit codes, pulls, missing executables, the progress
deadline; and a container pod is ready only once its runtime says it is running."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.autoscaler import RevisionAutoscaler
from serving.autoscaling_config import RevisionScalingSpec
from serving.failures import (
    DEFAULT_PROGRESS_DEADLINE,
    Failure,
    exit_failure,
    parse_duration,
    progress_deadline,
    start_failure,
)
from serving.manifest import ManifestError
from serving.manifest_loader import parse_service
from serving.pods import LocalPod, PodPhase
from serving.podspec import PodPlan, PodPorts, Process
from serving.runtime import RevisionRuntime

PULL_LINE = (
    "Error: initializing source docker://localhost/absent:1: pinging container registry "
    'localhost: Get "https://localhost/v2/": dial tcp 127.0.0.1:443: connect: connection refused'
)


@pytest.mark.parametrize(
    ("code", "line", "container", "expected"),
    [
        (3, "boom", False, Failure("ExitCode3", "boom")),
        (-9, "", False, Failure("ExitCode137", "")),
        (125, PULL_LINE, True, Failure("ImagePullBackOff", PULL_LINE)),
        (125, PULL_LINE, False, Failure("ExitCode125", PULL_LINE)),
        (
            127,
            'Error: runc: exec: "/srv": stat /srv: no such file or directory',
            True,
            Failure(
                "StartError", 'Error: runc: exec: "/srv": stat /srv: no such file or directory'
            ),
        ),
        (1, "pull the lever", True, Failure("ExitCode1", "pull the lever")),
    ],
)
def test_exit_failure_reasons(code: int, line: str, container: bool, expected: Failure) -> None:
    assert exit_failure(code, line, container=container) == expected


def test_start_failure_names_the_missing_executable(tmp_path: Path) -> None:
    exc = FileNotFoundError(2, "No such file or directory", "./server")
    assert str(start_failure(exc, "./server", str(tmp_path))) == (
        f'StartError: executable file "./server" not found (relative to {tmp_path})'
    )
    bare = FileNotFoundError(2, "No such file or directory", "nosuchcmd")
    assert start_failure(bare, "nosuchcmd", str(tmp_path)).message == (
        'executable file "nosuchcmd" not found in $PATH'
    )
    gone = start_failure(bare, "nosuchcmd", str(tmp_path / "gone"))
    assert gone.message == f'working directory "{tmp_path / "gone"}" not found'
    denied = PermissionError(13, "Permission denied", "/etc/passwd")
    assert start_failure(denied, "/etc/passwd", "/").message == (
        'permission denied: "/etc/passwd" is not executable'
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("600s", 600.0), ("10m", 600.0), ("1h30m", 5400.0), ("1.5s", 1.5)]
)
def test_parse_duration_reads_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "ten s", "5x", "-3s"])
def test_parse_duration_refuses_the_rest(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_progress_deadline_default_annotation_and_validation() -> None:
    assert progress_deadline({}) == DEFAULT_PROGRESS_DEADLINE
    assert progress_deadline({"serving.knative.dev/progress-deadline": "30s"}) == 30.0
    doc: dict[str, Any] = yaml.safe_load(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\n"
        "spec: {template: {metadata: {annotations: "
        "{serving.knative.dev/progress-deadline: soon}}, spec: {containers: [{image: i}]}}}\n"
    )
    with pytest.raises(ManifestError) as info:
        parse_service(doc)
    assert info.value.messages == (
        'invalid value: "soon" (want a positive duration such as 600s): '
        "spec.template.metadata.annotations[serving.knative.dev/progress-deadline]",
    )


def _plan(tmp_path: Path, running_check: tuple[str, ...] = ()) -> PodPlan:
    proc = Process(("true",), {}, str(tmp_path))
    ports = PodPorts(1, 2, 3, 4, 5, 6)
    return PodPlan("p-1", "default", "s", "s-1", ports, proc, proc, running_check)


def _pod(plan: PodPlan, tmp_path: Path) -> LocalPod:
    return LocalPod(plan, tmp_path, on_change=lambda p: None, on_event=lambda *a: None)


def _runtime(*pods: LocalPod, created_at: float = 0.0, deadline: float = 10.0) -> RevisionRuntime:
    scaler = RevisionAutoscaler(RevisionScalingSpec.from_annotations({}, 0), 0.0, 1)
    rt = RevisionRuntime(("default", "s-1"), "s", scaler, list(pods))
    rt.created_at, rt.progress_deadline = created_at, deadline
    return rt


def test_revision_fails_with_progress_deadline_and_the_last_probe_error(tmp_path: Path) -> None:
    pod = _pod(_plan(tmp_path), tmp_path)
    pod.last_probe_error = "dial tcp 127.0.0.1:1: connect: connection refused"
    rt = _runtime(pod, deadline=10.0)
    assert rt.failed(9.9) is None
    assert rt.reason() == "last probe error: dial tcp 127.0.0.1:1: connect: connection refused"
    failure = rt.failed(10.0)
    assert failure is not None and failure.reason == "ProgressDeadlineExceeded"
    assert failure.message.endswith("last probe error: " + pod.last_probe_error)


def test_revision_fails_at_once_with_a_pods_exit(tmp_path: Path) -> None:
    pod = _pod(_plan(tmp_path), tmp_path)
    pod.failure = Failure("ExitCode3", "boom")
    assert _runtime(pod).failed(0.0) == Failure("ExitCode3", "boom")
    pod.phase = PodPhase.READY  # a ready pod means not failed, whatever happened before
    assert _runtime(pod).failed(100.0) is None


async def test_container_pod_is_not_ready_until_the_runtime_says_running(tmp_path: Path) -> None:
    # The runtime's port reservation can accept the TCP probe before the container runs (or
    # after it failed): the probe alone must not make the pod ready.
    flag = tmp_path / "running"
    check = (sys.executable, "-c", f"import os; print(str(os.path.exists({str(flag)!r})).lower())")
    pod = _pod(_plan(tmp_path, check), tmp_path)
    probes = 0

    async def probe_ok() -> bool:
        nonlocal probes
        probes += 1
        if probes == 3:
            flag.touch()
        return True

    pod._probe = probe_ok  # type: ignore[method-assign]
    pod._dead = lambda: None  # type: ignore[method-assign]
    async with asyncio.timeout(30):
        await pod._until_ready()
    assert pod.ready and probes == 3
    assert pod.last_probe_error == "container not running yet"
    local = _pod(replace(_plan(tmp_path), running_check=()), tmp_path)
    assert await local._container_running()
