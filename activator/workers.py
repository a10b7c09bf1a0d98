"""Several activator worker processes on one port (SO_REUSEPORT), and their supervisor.

``python -m activator --workers N`` starts N children, each ``python -m activator`` with the
same flags plus a hidden ``--worker-index i``. Every child binds the data port with
SO_REUSEPORT (the kernel spreads connections), serves metrics on ``metrics-port + i``, and
counts as one activator of N in the capacity split, exactly as Knative divides a revision's
capacity between activator replicas.

The parent only supervises. It forwards SIGTERM, SIGINT and SIGHUP to every child and, once
told to stop, exits when all children have exited, with the highest exit code among them. A
child that exits on its own (a crash, an OOM kill) is started again in its slot with the
same index, after a back-off that doubles from 0.1 s up to 30 s and starts over once a child
has run for a minute; the others serve meanwhile (issue 15: the survivor used to drain and
the whole activator exit). A slot that crashes again and again within seconds of starting
(``CRASH_LOOP`` times in a row) stops everything and exits with its code, so that a worker
set that cannot run fails loudly for Kubernetes to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence

__all__ = ["Supervisor", "supervise"]

log = logging.getLogger("sluice.activator.workers")

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: Restart back-off: first delay, cap, and how long a child must run to reset it.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
#: Consecutive short-lived runs of one slot that end the whole worker set.
CRASH_LOOP = 5

#: The command line of worker ``i``.
Command = Callable[[int], Sequence[str]]


def _exit_code(code: int) -> int:
    # A child killed by signal N has returncode -N; report it as a shell would (128 + N).
    return code if code >= 0 else 128 - code


class Supervisor:
    """Keeps ``workers`` children of ``command`` running until ``signal`` stops them."""

    def __init__(
        self,
        command: Command,
        workers: int,
        *,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        healthy_after: float = HEALTHY_AFTER,
        crash_loop: int = CRASH_LOOP,
    ) -> None:
        self.command = command
        self.workers = workers
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self.crash_loop = crash_loop
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        #: Starts per slot (for logs and tests).
        self.starts = [0] * workers
        self._stop = asyncio.Event()
        self._failed: int | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def signal(self, sig: signal.Signals) -> None:
        """Forward ``sig`` to every child; SIGTERM and SIGINT also stop the supervisor."""
        if sig != signal.SIGHUP:
            self._stop.set()
        for proc in list(self.procs.values()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def run(self) -> int:
        """Run the slots until stopped; the exit code (see the module docstring)."""
        slots = [asyncio.ensure_future(self._slot(i)) for i in range(self.workers)]
        try:
            codes = await asyncio.gather(*slots)
        finally:
            for task in slots:
                task.cancel()
            for proc in self.procs.values():
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        if self._failed is not None:
            return self._failed
        return max((_exit_code(c) for c in codes), default=0)

    async def _slot(self, index: int) -> int:
        loop = asyncio.get_running_loop()
        delay = self.backoff_first
        short_runs = 0
        while True:
            started = loop.time()
            proc = await asyncio.create_subprocess_exec(*self.command(index))
            self.procs[index] = proc
            self.starts[index] += 1
            if self.stopping:  # stopped while it was being started
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            if self.stopping:
                return code
            if loop.time() - started >= self.healthy_after:
                delay, short_runs = self.backoff_first, 0
            short_runs += 1
            if short_runs >= self.crash_loop:
                log.error(
                    "worker %d keeps exiting (code %s, %d times in a row); stopping all",
                    index, code, short_runs,
                )  # fmt: skip
                self._failed = _exit_code(code) or 1
                self.signal(signal.SIGTERM)
                return code
            log.error(
                "worker %d (pid %d) exited with code %s; restarting it in %.1fs",
                index, proc.pid, code, delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self.stopping:
                return code
            delay = min(delay * 2, self.backoff_max)


def activator_command(argv: Sequence[str]) -> Command:
    """Worker ``i``: ``python -m activator`` with the parent's flags and its index."""
    return lambda index: [sys.executable, "-m", "activator", *argv, "--worker-index", str(index)]


async def supervise(argv: Sequence[str], workers: int) -> int:
    """Run ``workers`` children with ``argv`` (the parent's flags), restarting any that
    die, until SIGTERM or SIGINT; then wait for them all."""
    loop = asyncio.get_running_loop()
    supervisor = Supervisor(activator_command(argv), workers)
    for sig in _FORWARDED:
        loop.add_signal_handler(sig, supervisor.signal, sig)
    try:
        return await supervisor.run()
    finally:
        for sig in _FORWARDED:
            loop.remove_signal_handler(sig)
