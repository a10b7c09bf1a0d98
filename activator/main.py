"""``python -m activator``: flags, start-up checks and signal handling of one activator.

Flags (environment fallback in brackets):

``--config FILE`` (required) static source file, re-read when it changes and on SIGHUP;
``--host`` (all interfaces), ``--port`` (8012), ``--metrics-port`` (9090; worker ``i`` of
``--workers N`` uses ``metrics-port + i``), ``--workers`` (1), ``--drain-seconds`` (45),
``--pod-name`` [``POD_NAME``] (``activator``), ``--scaler-url`` (overrides ``scaler.url`` of
the file), ``--log-level`` (info).

Start-up with an invalid file or flag prints one line on stderr and exits 1. SIGTERM (or
SIGINT) starts the drain and the process exits 0 once in-flight requests finished.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from activator.app import DRAIN_SECONDS, Activator, Settings
from activator.config import ConfigError
from activator.source import StaticFileSource
from activator.workers import supervise
from proxy.runner import run

__all__ = ["main", "parse_settings"]

log = logging.getLogger("sluice.activator")

_LOG_LEVELS = ("debug", "info", "warning", "error")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit code 1, like every other start-up error.
        self.exit(1, f"activator: {message}\n")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = _Parser(prog="python -m activator", description="Sluice activator")
    p.add_argument("--config", required=True, type=Path, help="static source YAML file")
    p.add_argument("--host", default="", help="listen address (default: all interfaces)")
    p.add_argument("--port", type=int, default=8012)
    p.add_argument("--metrics-port", type=int, default=9090, help="worker i uses this + i")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    p.add_argument("--worker-index", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--drain-seconds", type=float, default=DRAIN_SECONDS)
    p.add_argument("--pod-name", default=env.get("POD_NAME") or "activator")
    p.add_argument("--scaler-url", default=None, help="POST stats here (overrides the file)")
    p.add_argument("--log-level", default="info", choices=_LOG_LEVELS)
    return p


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Flags → ``Settings``; raises ``ValueError`` (one line) or exits 1 on a bad flag."""
    ns = _parser(os.environ if env is None else env).parse_args(list(argv))
    index = ns.worker_index
    if ns.workers == 1 and index < 0:
        index = 0
    return Settings(
        config=ns.config,
        host=ns.host,
        port=ns.port,
        metrics_port=ns.metrics_port,
        workers=ns.workers,
        worker_index=index,
        drain_seconds=ns.drain_seconds,
        pod_name=ns.pod_name,
        log_level=ns.log_level,
        scaler_url=ns.scaler_url,
    )


async def serve(settings: Settings, source: StaticFileSource) -> int:
    """Run one activator until SIGTERM/SIGINT has been handled; returns the exit code."""
    loop = asyncio.get_running_loop()
    activator = Activator(settings, source)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, source.reload)
    try:
        await activator.start()
    except OSError as exc:
        print(f"activator: cannot listen: {exc}", file=sys.stderr)
        await activator.close()
        return 1
    await stop.wait()
    log.info("received SIGTERM")
    # Signals during the drain change nothing: the drain already runs.
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    await activator.drain()
    log.info("drained, exiting")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(args)
    except ValueError as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}] %(message)s",
        stream=sys.stderr,
    )
    try:
        source = StaticFileSource.open(settings.config)
    except ConfigError as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 1
    if settings.worker_index < 0:
        return run(lambda: supervise(args, settings.workers))
    return run(lambda: serve(settings, source))
