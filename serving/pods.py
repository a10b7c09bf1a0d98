"""A local pod: the user process and its queue-proxy, supervised like a kubelet would.

Theory of operation. ``LocalPod.run`` is the pod's only task and the only writer of its
state. It starts the queue-proxy and the user process (each in its own session, so the
whole process group can be signalled), then probes the queue-proxy the way the activator
does (``K-Network-Probe: queue``) until it answers ``200 queue``: the pod is then *ready*.
A process that exits on its own is a crash: the pod turns not-ready at once and the process
is restarted after a back-off (1 s doubling to 30 s, reset after 60 s of good running), with
the exit reason kept for ``sluice describe``. ``stop`` (the scale-down path) turns the pod
not-ready first, then sends SIGTERM to the queue-proxy and waits for it to drain, then SIGTERM
to the user process, and SIGKILLs any process group still alive after the grace period.

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
from serving.podspec import POD_IP, PodPlan, PodPorts, Process

PROBE_HEADERS = (("K-Network-Probe", "queue"), ("User-Agent", "Knative-Activator-Probe"))
#: How often a starting pod is probed; the activator probes new pods every 200 ms, a bit
#: faster here makes a cold start quicker.
STARTUP_PROBE_INTERVAL = 0.05
#: Once ready, a pod is re-probed this often; this many failures in a row make it not ready.
READY_PROBE_INTERVAL = 1.0
READY_PROBE_FAILURES = 3
PROBE_TIMEOUT = 1.0
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

    def exit_reason(self) -> str:
        code = self.proc.returncode if self.proc else None
        if code is None:
            return "running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        tail = last_log_line(self.log_path)
        return f"exit code {code}: {tail}" if tail else f"exit code {code}"


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
            await self.queue.start()
            await self.app.start()
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
        except OSError as exc:
            self._set(PodPhase.CRASHED, f"cannot start: {exc}")
            self.on_event(self, "Warning", "Failed", self.reason)

    async def _until_ready(self) -> None:
        while not self._stopping:
            dead = self._dead()
            if dead is not None:
                await self._restart(dead)
                continue
            if await self._probe():
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
        reason = f"{proc.label} {proc.exit_reason()}"
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
        try:
            res = await probe_http(POD_IP, self.plan.ports.queue, "/", PROBE_HEADERS, PROBE_TIMEOUT)
        except ProbeError:
            return False
        return res.status == 200 and res.body == b"queue"

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
