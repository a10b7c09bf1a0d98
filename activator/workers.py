"""Several activator worker processes on one port (SO_REUSEPORT), and their supervisor.

``python -m activator --workers N`` starts N children, each ``python -m activator`` with the
same flags plus a hidden ``--worker-index i``. Every child binds the data port with
SO_REUSEPORT (the kernel spreads connections), serves metrics on ``metrics-port + i``, and
counts as one activator of N in the capacity split, exactly as Knative divides a revision's
capacity between activator replicas.

The parent only supervises: it forwards SIGTERM, SIGINT and SIGHUP to every child and exits
when all children have exited, with the highest exit code among them. A child that exits on
its own (a crash) makes the parent stop the others: a worker set with a hole would give the
revision less than its capacity, so the whole set fails loudly instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

__all__ = ["supervise"]

log = logging.getLogger("sluice.activator.workers")

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def supervise(argv: Sequence[str], workers: int) -> int:
    """Run ``workers`` children with ``argv`` (the parent's flags) and wait for them all."""
    loop = asyncio.get_running_loop()
    procs: list[asyncio.subprocess.Process] = []
    stopping = False

    def forward(sig: signal.Signals) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    for sig in _FORWARDED:
        loop.add_signal_handler(sig, forward, sig)
    try:
        for index in range(workers):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "activator", *argv, "--worker-index", str(index)
                )
            )
        waits = {loop.create_task(proc.wait()): proc for proc in procs}
        pending = set(waits)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not stopping:
                for task in done:
                    log.error(
                        "worker pid %d exited with code %s; stopping the others",
                        waits[task].pid, waits[task].returncode,
                    )  # fmt: skip
                forward(signal.SIGTERM)
        # A child killed by signal N has returncode -N; report it as a shell would (128 + N).
        codes = [c if c >= 0 else 128 - c for c in (proc.returncode or 0 for proc in procs)]
        return max(codes, default=0)
    finally:
        for sig in _FORWARDED:
            loop.remove_signal_handler(sig)
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
