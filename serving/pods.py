"""A local pod: the user process and its queue-proxy, supervised like a kubelet would.

Theory of operation. ``LocalPod.run`` is the pod's only task and the only writer of its
state. It starts the queue-proxy and the user process (each in its own session, so the
whole process group can be signalled), then probes the queue-proxy the way the activator
does (``K-Network-Probe: queue``) until it answers ``200 queue``: the pod is then *ready*.
A process that exits on its own is a crash: the pod turns not-ready at once and the process
is restarted after a back-off (1 s doubling to 30 s, reset after 60 s of good running), with
the exit reason kept for ``sluice describe`` as a ``Failure`` (``ExitCode<N>`` and the last log
line, ``ImagePullBackOff``, ``StartError`` naming a missing executable). A pod whose image runs
in a container is ready only once the runtime reports the container running: until then a TCP
probe may be answered by the runtime's port reservation, not the app. ``stop`` (the scale-down
path) turns the pod not-ready first, then sends SIGTERM to the queue-proxy and waits for it to
drain, then SIGTERM to the user process, and SIGKILLs any process group still alive after the
grace period.

Every state change calls ``on_change`` (synchronously, from the pod's task) so the owner can
recompute endpoints; events go through ``on_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from proxy.dataplane.prober import ProbeError, probe_http
from serving.failures import Failure, exit_failure, start_failure
from serving.podspec import POD_IP, PodPlan, PodPorts, Process

PROBE_HEADERS = (("K-Network-Probe", "queue"), ("User-Agent", "Knative-Activator-Probe"))
#: How often a starting pod is probed; the activator probes new pods every 200 ms, a bit
#: faster here makes a cold start quicker.
STARTUP_PROBE_INTERVAL = 0.05
#: Once ready, a pod is re-probed this often; this many failures in a row make it not ready.
READY_PROBE_INTERVAL = 1.0
READY_PROBE_FAILURES = 3
PROBE_TIMEOUT = 1.0
#: ``podman inspect`` answers in well under a second; a hung runtime counts as not running.
RUNNING_CHECK_TIMEOUT = 5.0
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
#: A process that ran this long resets the back-off, as the kubelet does after 10 minutes.
BACKOFF_RESET_AFTER = 60.0
#: SIGTERM → SIGKILL for each process (Knative's terminationGracePeriodSeconds is 300 s for
#: the revision timeout; the queue-proxy's drain finishes long before in practice).
TERMINATION_GRACE = 30.0

EventSink = Callable[["LocalPod", str, str, str], None]


class PodPhase(enum.Enum):
    STARTING = "Starting"
    READY = "Ready"
    CRASHED = "CrashLoopBackOff"
    TERMINATING = "Terminating"
    STOPPED = "Stopped"


def free_ports(count: int, host: str = POD_IP) -> list[int]:
    """``count`` distinct ports that were free a moment ago (the kernel picks them)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def allocate_ports() -> PodPorts:
    return PodPorts.from_list(free_ports(PodPorts.COUNT))


def _die_with_parent() -> None:
    """In the child: get SIGTERM if Sluice dies, so a killed ``sluice up`` orphans nothing."""
    os.setsid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Proc:
    """One supervised process; ``pid`` is also its process-group id."""

    def __init__(self, label: str, spec: Process, log_path: Path) -> None:
        self.label = label
        self.spec = spec
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.restarts = 0

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = self.log_path.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                env=self.spec.env,
                cwd=self.spec.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def terminate(self, grace: float) -> None:
        """SIGTERM the group, wait up to ``grace``, then SIGKILL it."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        except TimeoutError:
            self.signal_group(signal.SIGKILL)
            await self.proc.wait()
        # Children the process left behind in its group go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def exit_failure(self, container: bool) -> Failure:
        """Why the process ended; ``container``: it is a runtime's ``run`` (see failures)."""
        code = self.proc.returncode if self.proc else None
        if code is None:
            return Failure("Running", "")
        tail = last_log_line(self.log_path)
        if code < 0:
            with contextlib.suppress(ValueError):
                killed = f"killed by {signal.Signals(-code).name}"
                tail = f"{killed}; last log line: {tail}" if tail else killed
        return exit_failure(code, tail, container=container)


def last_log_line(path: Path, limit: int = 200) -> str:
    """The last non-blank line of a log (what ``sluice describe`` shows for a crash), cut to
    ``limit`` characters; "" when there is none."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            data = f.read()
    except OSError:
        return ""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else ""


class LocalPod:
    def __init__(
        self,
        plan: PodPlan,
        log_dir: Path,
        *,
        on_change: Callable[[LocalPod], None],
        on_event: EventSink,
    ) -> None:
        self.plan = plan
        self.phase = PodPhase.STARTING
        self.reason = ""
        #: The last time a process of the pod ended or could not start; None while healthy.
        self.failure: Failure | None = None
        self.last_probe_error = ""
        self.created_at = time.time()
        self.on_change = on_change
        self.on_event = on_event
        self.app = _Proc("user-container", plan.user, log_dir / f"{plan.name}.log")
        self.queue = _Proc("queue-proxy", plan.queue_proxy, log_dir / f"{plan.name}.queue.log")
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<LocalPod {self.plan.name} {self.phase.value} {self.plan.endpoint}>"

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def ready(self) -> bool:
        return self.phase is PodPhase.READY

    @property
    def restarts(self) -> int:
        return self.app.restarts + self.queue.restarts

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"pod {self.name}")
        return self._task

    async def run(self) -> None:
        try:
            for proc in (self.queue, self.app):
                try:
                    await proc.start()
                except OSError as exc:
                    failure = start_failure(exc, proc.spec.argv[0], proc.spec.cwd)
                    self.failure = failure
                    self._set(PodPhase.CRASHED, f"{proc.label} {failure}")
                    self.on_event(self, "Warning", "Failed", self.reason)
                    return
            self.on_event(self, "Normal", "Started", f"pid {self.app.proc and self.app.proc.pid}")
            while not self._stopping:
                await self._until_ready()
                if self._stopping:
                    break
                crashed = await self._while_ready()
                if crashed is not None and not self._stopping:
                    await self._restart(crashed)
        except asyncio.CancelledError:
            raise
        except OSError as exc:  # a restart that could not exec
            self.failure = Failure("StartError", str(exc))
            self._set(PodPhase.CRASHED, f"cannot start: {exc}")
            self.on_event(self, "Warning", "Failed", self.reason)

    async def _until_ready(self) -> None:
        while not self._stopping:
            dead = self._dead()
            if dead is not None:
                await self._restart(dead)
                continue
            if await self._probe() and await self._container_running():
                self.failure = None
                self._set(PodPhase.READY, "")
                return
            await asyncio.sleep(STARTUP_PROBE_INTERVAL)

    async def _while_ready(self) -> _Proc | None:
        failures = 0
        while not self._stopping:
            waiters = [
                asyncio.ensure_future(p.proc.wait()) for p in (self.app, self.queue) if p.proc
            ]
            try:
                done, _ = await asyncio.wait(waiters, timeout=READY_PROBE_INTERVAL)
            finally:
                for w in waiters:
                    w.cancel()
            dead = self._dead()
            if dead is not None:
                return dead
            if done or self._stopping:
                continue
            failures = 0 if await self._probe() else failures + 1
            if failures >= READY_PROBE_FAILURES:
                self._set(PodPhase.STARTING, "readiness probe failed")
                return None
        return None

    def _dead(self) -> _Proc | None:
        for p in (self.queue, self.app):
            if not p.alive:
                return p
        return None

    async def _restart(self, proc: _Proc) -> None:
        ran_for = time.monotonic() - proc.started_at
        if ran_for > BACKOFF_RESET_AFTER:
            proc.restarts = 0
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(proc.restarts, 10))
        self.failure = proc.exit_failure(
            container=proc is self.app and bool(self.plan.running_check)
        )
        reason = f"{proc.label} {self.failure}"
        self._set(PodPhase.CRASHED, f"{reason}; restarting in {delay:g}s")
        self.on_event(self, "Warning", "BackOff", f"{self.name}: {self.reason}")
        await asyncio.sleep(delay)
        if self._stopping:
            return
        proc.restarts += 1
        await proc.start()
        self._set(PodPhase.STARTING, f"restarted after {reason}")
        self.on_event(self, "Normal", "Restarted", f"{proc.label} (restart {proc.restarts})")

    async def _probe(self) -> bool:
        """The activator's probe of the queue-proxy; on failure ``last_probe_error`` says why,
        in the kubelet's words when the user container does not accept connections."""
        try:
            res = await probe_http(POD_IP, self.plan.ports.queue, "/", PROBE_HEADERS, PROBE_TIMEOUT)
        except ProbeError as exc:
            why = f"queue-proxy: {exc}"
        else:
            if res.status == 200 and res.body == b"queue":
                return True
            why = f"readiness probe of the user container failed (queue-proxy: {res.status})"
        # queue-proxy says only 503 or times out: a refused connection is the usual cause.
        self.last_probe_error = await self._user_dial_error() or why
        return False

    async def _user_dial_error(self) -> str:
        """ "" if the user port accepts a TCP connection, else the dial error."""
        port = self.plan.ports.user
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(POD_IP, port), PROBE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "i/o timeout"
            return f"dial tcp {POD_IP}:{port}: connect: {why.lower()}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ""

    async def _container_running(self) -> bool:
        """True for a local process; for a container, whether the runtime says it is running."""
        if not self.plan.running_check:
            return True
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.plan.running_check,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            self.last_probe_error = f"cannot ask the runtime: {exc}"
            return False
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), RUNNING_CHECK_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            out = b""
        if out.strip() == b"true":
            return True
        self.last_probe_error = "container not running yet"
        return False

    def _set(self, phase: PodPhase, reason: str) -> None:
        if self.phase is PodPhase.TERMINATING and phase is not PodPhase.STOPPED:
            return
        changed = phase is not self.phase
        self.phase, self.reason = phase, reason
        if changed:
            self.on_change(self)

    async def stop(self, grace: float = TERMINATION_GRACE) -> None:
        """Drain and stop: not-ready first, then the queue-proxy (it drains), then the app."""
        if self.phase is PodPhase.STOPPED:
            return
        self._stopping = True
        self._set(PodPhase.TERMINATING, "scaling down")
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.queue.terminate(grace)
        await self.app.terminate(grace)
        self._set(PodPhase.STOPPED, "")
