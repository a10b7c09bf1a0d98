"""Running a container image as a pod's user container through Podman or Docker.

Pure core: ``run_argv`` is the one command line (``podman run ...`` in the foreground) that a
``LocalPod`` supervises exactly like a local process: SIGTERM to it is proxied to the
container (``--sig-proxy``, the default) and ``--rm`` removes the container when it exits, so
scale-down and Ctrl-C leave nothing behind. ``detect_runtime`` picks the runtime.

Podman on these machines (documented in docs/tutorial.md): rootful, ``--cgroup-manager=cgroupfs``
(no systemd), OCI runtime ``runc`` (crun refuses the hybrid cgroup layout), and ``--ulimit``
nofile/nproc no higher than Sluice's own hard limits (Podman's defaults exceed them and the
runtime's setrlimit is refused).
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from serving.manifest import Container
from serving.quantity import cpu_cores, memory_bytes

RUNTIMES = ("podman", "docker", "process")
#: runc refuses nproc above this here even when the hard limit is higher (found by trial:
#: 32768 works, 65536 does not), so the flag is capped.
NPROC_CAP = 32768
#: Every container Sluice starts carries this label, so leftovers can be found and removed.
LABEL = "io.sluice.pod"
#: ... and this one, naming the ``sluice up`` (its state directory) that started it, so a
#: restart removes its own leftovers and never another instance's containers.
OWNER_LABEL = "io.sluice.owner"
SWEEP_TIMEOUT = 60.0


class RuntimeError_(ValueError):
    """The requested container runtime is not usable; the message says what was tried."""


@dataclass(frozen=True, slots=True)
class ContainerRuntime:
    kind: str  # "podman" or "docker"
    executable: str
    global_flags: tuple[str, ...] = ()
    run_flags: tuple[str, ...] = ()

    @property
    def base(self) -> tuple[str, ...]:
        return (self.executable, *self.global_flags)


def host_ulimits() -> tuple[str, ...]:
    """``--ulimit`` flags at Sluice's own hard limits: the most the runtime may set here."""
    flags: list[str] = []
    for name, res in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(res)[1]
        if name == "nproc":
            hard = NPROC_CAP if hard == resource.RLIM_INFINITY else min(hard, NPROC_CAP)
        if hard != resource.RLIM_INFINITY:
            flags += ["--ulimit", f"{name}={hard}:{hard}"]
    return tuple(flags)


def make_runtime(kind: str, which: Callable[[str], str | None] = shutil.which) -> ContainerRuntime:
    """The runtime ``kind`` with the flags that work on this host; raises naming what was tried."""
    exe = which(kind)
    if exe is None:
        hint = "apt-get install -y podman runc" if kind == "podman" else f"install {kind}"
        raise RuntimeError_(f"--runtime {kind}: {kind} not found on PATH ({hint})")
    if kind == "podman":
        flags: tuple[str, ...] = ("--cgroup-manager=cgroupfs",)
        if which("runc") is not None:
            flags += ("--runtime", "runc")
        return ContainerRuntime(kind, exe, flags, host_ulimits())
    return ContainerRuntime(kind, exe)


def detect_runtime(
    requested: str = "", which: Callable[[str], str | None] = shutil.which
) -> ContainerRuntime | None:
    """``requested`` (podman|docker|process) or the first of podman, docker installed;
    ``None`` means images cannot run (process only)."""
    if requested and requested not in RUNTIMES:
        raise RuntimeError_(f"--runtime {requested}: expected one of {', '.join(RUNTIMES)}")
    if requested == "process":
        return None
    if requested:
        return make_runtime(requested, which)
    for kind in ("podman", "docker"):
        if which(kind) is not None:
            return make_runtime(kind, which)
    return None


def default_runtime() -> ContainerRuntime | None:
    """The runtime named by ``SLUICE_RUNTIME`` (set by ``sluice up --runtime``), else detected."""
    return detect_runtime(os.environ.get("SLUICE_RUNTIME", ""))


def owner_id(state_dir: Path) -> str:
    """A short stable id for the ``sluice up`` owning ``state_dir``."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


def container_name(namespace: str, pod: str, owner: str = "") -> str:
    return f"sluice-{owner}-{namespace}-{pod}" if owner else f"sluice-{namespace}-{pod}"


def limit_flags(runtime: ContainerRuntime, container: Container) -> tuple[str, ...]:
    """``resources.limits`` as ``--cpus``/``--memory`` (both runtimes take them)."""
    flags: list[str] = []
    for name, value in container.limits:
        if name == "cpu":
            flags.append(f"--cpus={cpu_cores(value):g}")
        elif name == "memory":
            flags.append(f"--memory={memory_bytes(value)}")
    return tuple(flags)


def sweep(
    runtime: ContainerRuntime,
    owner: str,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> tuple[str, ...]:
    """Remove every container ``owner`` left behind (after a SIGKILL of ``sluice up``);
    returns their ids. Blocking: call it off the event loop."""
    found = run(
        [*runtime.base, "ps", "-a", "-q", "--filter", f"label={OWNER_LABEL}={owner}"],
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT,
        check=False,
    )
    ids = tuple(found.stdout.split()) if found.returncode == 0 else ()
    if ids:
        run([*runtime.base, "rm", "-f", *ids], capture_output=True, text=True,
            timeout=SWEEP_TIMEOUT, check=False)  # fmt: skip
    return ids


def run_argv(
    runtime: ContainerRuntime,
    container: Container,
    *,
    name: str,
    host_port: int,
    env: Mapping[str, str],
    args: tuple[str, ...],
    host: str = "127.0.0.1",
    owner: str = "",
) -> tuple[str, ...]:
    """The foreground ``run`` command: the container port published on ``host:host_port``,
    ``env`` as ``-e`` flags, ``args`` (already ``$(VAR)``-expanded) after the image."""
    argv = [
        *runtime.base,
        "run",
        "--rm",
        # An init as PID 1 so SIGTERM stops servers (busybox httpd) that ignore it as PID 1.
        "--init",
        "--pull=missing",
        "--name",
        name,
        "--label",
        f"{LABEL}={name}",
        *(("--label", f"{OWNER_LABEL}={owner}") if owner else ()),
        "-p",
        f"{host}:{host_port}:{container.port}",
        *runtime.run_flags,
        *limit_flags(runtime, container),
    ]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    if container.command:
        argv += ["--entrypoint", container.command[0]]
        args = (*container.command[1:], *args)
    argv.append(container.image)
    argv += args
    return tuple(argv)
