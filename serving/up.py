"""``sluice up``: the control plane, the activator and the API in one process.

Start-up order: lock the state directory (one ``sluice up`` per state), validate the manifests
given on the command line (a bad one stops here, before anything listens), restore the state
(``--fresh`` clears it first), remove containers a killed previous run left, start the
activator and the API, start the control plane's loops, apply the manifests: only when the
state was fresh or with ``--reapply``, so a restart keeps what the user changed since.

Shutdown (Ctrl-C or SIGTERM): stop accepting traffic and let in-flight requests finish, drain
and stop every pod (queue-proxy first, so no accepted request is lost), then close the
activator and the API.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from activator.source import PushSource
from serving import views
from serving.api import make_app
from serving.containers import RuntimeError_, default_runtime, owner_id, sweep
from serving.controlplane import ControlPlane, Event
from serving.embedded import make_activator, queue_depths
from serving.envsources import EnvSource
from serving.manifest import ManifestError, ServiceManifest
from serving.manifest_loader import load_path_batch
from serving.settings import UpSettings, split_address
from serving.state import StateLock, StateStore, reset_state

#: In-flight requests get this long to finish on Ctrl-C before pods are stopped.
SHUTDOWN_GRACE = 10.0


def load_items(
    paths: Sequence[str], settings: UpSettings
) -> tuple[list[tuple[ServiceManifest, str]], list[EnvSource]]:
    """Manifests of every path with the directory each runs in, and the ConfigMaps/Secrets;
    ``ManifestError`` if any is bad."""
    items: list[tuple[ServiceManifest, str]] = []
    sources: list[EnvSource] = []
    errors: list[str] = []
    for raw in paths:
        path = Path(raw).resolve()
        workdir = str(path if path.is_dir() else path.parent)
        try:
            batch = load_path_batch(path, settings.autoscaler)
        except ManifestError as exc:
            errors.extend(exc.messages)
            continue
        items.extend((svc, workdir) for svc in batch.services)
        sources.extend(batch.sources)
    if errors:
        raise ManifestError(errors)
    return items, sources


class Printer:
    """Progress lines on ``out``: every control-plane event, one line each."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def event(self, ev: Event) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev.time))
        self.line(f"{stamp} {ev.type:<7} {ev.reason:<14} {ev.object}: {ev.message}")


async def serve(settings: UpSettings, paths: Sequence[str], out: TextIO = sys.stdout) -> int:
    lock = StateLock(settings.state_dir)
    try:
        lock.acquire()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        return await _serve(settings, paths, out)
    finally:
        lock.release()


async def _serve(settings: UpSettings, paths: Sequence[str], out: TextIO) -> int:
    printer = Printer(out)
    try:
        api_host, api_port = split_address(settings.api)
        items, sources = load_items(paths, settings)
        if settings.fresh:
            reset_state(settings.state_dir)
        store = StateStore(settings.state_dir)
        # A restart keeps what was changed since the first start; PATH is applied again only
        # on request, as `kubectl apply` would be.
        apply_paths = store.fresh or settings.reapply
        source = PushSource()
        cp = ControlPlane(settings, store, source.update)
        cp.restore()
    except (ManifestError, ValueError) as exc:
        lines = exc.messages if isinstance(exc, ManifestError) else (str(exc),)
        for message in lines:
            print(f"error: {message}", file=sys.stderr)
        return 1
    await _sweep(printer, settings)
    activator = make_activator(settings.host, settings.port, source, cp.handle_stats)
    cp.queue_depths = lambda: queue_depths(activator)
    cp.cold_starts = activator.handler.cold_starts
    cp.cold_starts.header_everywhere = settings.server_timing
    cp.publish_routing()  # the activator listens once it has a first configuration
    info: dict[str, Any] = {
        "activator": f"http://{settings.host}:{settings.port}",
        "api": f"http://{api_host}:{api_port}",
        "stateDir": str(settings.state_dir),
        "domain": settings.domain,
    }
    runner = web.AppRunner(make_app(cp, info, lambda: activator.config), access_log=None)
    await runner.setup()
    try:
        await activator.start()
        await web.TCPSite(runner, api_host, api_port).start()
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        await activator.close()
        await runner.cleanup()
        return 1
    info["activator"] = f"http://{settings.host}:{activator.port}"
    info["activatorMetrics"] = f"http://{settings.host}:{activator.metrics_port}/metrics"
    await cp.start()
    if (items or sources) and not apply_paths:
        printer.line(f"state in {settings.state_dir} kept: {' '.join(paths)} not applied again "
                     "(--reapply applies it, --fresh or `sluice reset` starts afresh)")  # fmt: skip
    try:
        if (items or sources) and apply_paths:
            for warning in [w for svc, _ in items for w in svc.warnings] + [
                w for s in sources for w in s.warnings
            ]:
                printer.line(f"Warning: {warning}")
            result = cp.apply(items, sources)
            for message in result.messages:
                printer.line(message)
    except ManifestError as exc:
        for message in exc.messages:
            print(f"error: {message}", file=sys.stderr)
    _banner(printer, cp, info)
    cp.on_event = printer.event  # progress from here on; earlier events are in `describe`
    await _wait_for_signal()
    printer.line("shutting down: draining requests and pods ...")
    await activator.server.shutdown(grace=SHUTDOWN_GRACE)
    await cp.stop()
    await activator.close()
    await runner.cleanup()
    printer.line("stopped")
    return 0


async def _sweep(printer: Printer, settings: UpSettings) -> None:
    """Remove containers a previous run of this state left (it was SIGKILLed)."""
    try:
        runtime = default_runtime()
    except RuntimeError_:
        return
    if runtime is None:
        return
    owner = owner_id(settings.state_dir)
    try:
        removed = await asyncio.to_thread(sweep, runtime, owner)
    except (OSError, subprocess.SubprocessError) as exc:
        printer.line(f"Warning: cannot list leftover containers with {runtime.kind}: {exc}")
        return
    if removed:
        printer.line(f"removed {len(removed)} container(s) left by a previous run")


def _banner(printer: Printer, cp: ControlPlane, info: dict[str, Any]) -> None:
    printer.line(f"sluice up: activator (traffic) on {info['activator']}")
    printer.line(f"           API on {info['api']} (metrics on {info['api']}/metrics)")
    printer.line(f"           state in {info['stateDir']}")
    for row in views.services(cp):
        printer.line(f"service {row['name']}: {row['url']}")


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
