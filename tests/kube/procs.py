"""Child processes of the kube tier: each in its own process group, logged to a file, reaped.

Contract: every process started through :class:`Supervisor` runs in a new session (so its
process group id is its pid) with stdout and stderr appended to one log file. ``stop`` sends
SIGTERM to the whole group, waits up to a bound, then SIGKILLs the group. Every supervisor
registers itself with :mod:`atexit`, so an interrupted session (Ctrl-C, a failing fixture, a
pytest-timeout) still leaves no process behind; tests' own teardown is the normal path.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Proc", "Supervisor", "base_env", "tail"]

# Go binaries (etcd, kube-apiserver, Knative's) exit within a second of SIGTERM; a queue-proxy
# drains first. Anything still alive after this is killed so teardown stays bounded.
DEFAULT_STOP_SECONDS = 10.0


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ("" when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(eq=False)
class Proc:
    """One started process; ``log`` holds its stdout and stderr."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = DEFAULT_STOP_SECONDS) -> int | None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it.

        Returns the exit code (negative for a signal), or None if it could not be reaped.
        """
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while children it forked linger in the group.
        _signal_group(self.popen.pid, signal.SIGKILL)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass(eq=False)
class Supervisor:
    """Starts processes and stops all that are still running, last started first."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop_all, 2.0)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        log_name: str | None = None,
    ) -> Proc:
        """Start ``argv`` with exactly ``env`` (nothing inherited), logging to ``<name>.log``."""
        log = self.log_dir / f"{log_name or name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log, tuple(argv), dict(env), cwd)
        with self._lock:
            self.procs.append(proc)
        return proc

    def restart(
        self, proc: Proc, down_seconds: float = 0.0, grace: float = DEFAULT_STOP_SECONDS
    ) -> Proc:
        """Stop ``proc``, stay down ``down_seconds`` (the outage a test asks for), start it
        again with the same argv, env and cwd, appending to the same log."""
        proc.stop(grace)
        self.forget(proc)
        time.sleep(down_seconds)
        return self.start(proc.name, proc.argv, proc.env, proc.cwd, log_name=proc.log.stem)

    def forget(self, proc: Proc) -> None:
        """Drop a process that has been stopped by its owner."""
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_all(self, grace: float = DEFAULT_STOP_SECONDS) -> None:
        """Stop every process, last started first. Each leaves the list only once stopped,
        so if this is interrupted (a second signal) the atexit pass stops the rest."""
        deadline = time.monotonic() + grace
        while True:
            with self._lock:
                if not self.procs:
                    return
                proc = self.procs[-1]
            proc.stop(max(0.1, deadline - time.monotonic()))
            self.forget(proc)


def base_env(**extra: str) -> dict[str, str]:
    """A minimal environment for a child: PATH, HOME, locale, plus ``extra``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env
