"""``python -m bench.instructions [TARGET...]``: instructions per request, free of machine noise.

CPU time per request moves by up to 50 % between runs on a shared host (``docs/benchmarks.md``),
which hides changes of a few per cent. This measures the request path without the machine: a
real ``HttpServerProtocol`` and a real pooled ``UpstreamConnection`` fed canned bytes in
process, one request at a time, no sockets and no kernel, run under
``valgrind --tool=callgrind``. The figure is (I(N2) - I(N1)) / (N2 - N1): the user-space
instructions (interpreter, httptools, uvloop) one more request costs, start-up excluded. The
same build gives the same figure to within about 1 %, so compare builds with it; it leaves out
the kernel (about half of a proxied request's CPU) and says nothing about nginx.

Targets: ``engine`` (``proxy.passthrough``'s handler), ``queue-proxy`` (CC 0),
``queue-proxy-cc10`` (CC 10, never full), ``queue-proxy-queued`` (CC 1, every second request
waits in the breaker queue and is granted from the event loop) and ``queue-proxy-pair`` (the
same two requests and loop turn at CC 2, so nothing waits: the difference to
``queue-proxy-queued`` is what queueing costs) and ``activator`` (CC 0, one route's Host, one
pod already healthy: routing, throttler and forwarding, no probing).

``--driver TARGET N`` (used under valgrind) serves N requests after a warm-up and exits;
``--check`` serves a few hundred requests without valgrind and fails if any answer is wrong or
any request's objects are left in a reference cycle (the hot-path rule in ``proxy/http1.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import uvloop

from activator.handler import ActivatorHandler, Snapshot
from activator.metrics import ActivatorMetrics
from activator.model import Revision, Route, RoutingConfig, TrafficTarget
from activator.routing import RouteTable
from activator.stats import ConcurrencyReporter
from activator.throttler import RevisionThrottler
from proxy.client import UpstreamConnection
from proxy.dataplane.breaker import Breaker
from proxy.dataplane.concurrency import RequestStats
from proxy.dataplane.deadline import Deadline
from proxy.dataplane.drain import Drainer
from proxy.http1 import Handler, HttpServerProtocol, ServerContext
from proxy.limits import ServerLimits
from proxy.passthrough import Passthrough
from proxy.pool import UpstreamPool
from proxy.runner import settle_gc
from queueproxy.handler import QueueProxyHandler, QueueProxyState
from queueproxy.metrics import RequestMetrics
from queueproxy.readiness import ReadinessProber

TARGETS = (
    "engine",
    "queue-proxy",
    "queue-proxy-cc10",
    "queue-proxy-queued",
    "queue-proxy-pair",
    "activator",
)
#: Requests of the two measured runs; their difference cancels start-up and warm-up.
SMALL_N, LARGE_N = 1000, 6000
WARM_UP = 500

#: What ``hey`` sends, and what the benchmarks' nginx backend answers.
REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8012\r\nUser-Agent: hey/0.0.1\r\n"
    b"Content-Type: text/html\r\nAccept-Encoding: gzip\r\n\r\n"
)
#: The same request to the activator, for a route's host.
ACTIVATOR_REQUEST = REQUEST.replace(b"127.0.0.1:8012", b"hello.default.localhost")
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 08:30:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
    b"hello world\n"
)
_UPSTREAM = ("127.0.0.1", 8080)
_DEST = "127.0.0.1:8080"


class _Wire:
    """The least of a transport: writes are kept, closing means the driver went wrong."""

    def __init__(self, out: list[bytes]) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def writelines(self, parts: Any) -> None:
        self.out.extend(parts)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise RuntimeError("the driver's connection was closed: a request failed")

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Rig:
    """One client connection and two pooled upstream connections around ``handler``."""

    def __init__(
        self,
        handler: Handler,
        pool: UpstreamPool,
        loop: asyncio.AbstractEventLoop,
        request: bytes = REQUEST,
    ) -> None:
        self.pool = pool
        self.request = request
        self.down: list[bytes] = []
        self.up: list[bytes] = []
        self.upstreams = [UpstreamConnection(pool, _UPSTREAM, loop) for _ in range(2)]
        for conn in self.upstreams:
            conn.connection_made(cast(asyncio.Transport, _Wire(self.up)))
            conn.reusable = True
            pool.release(conn)
        self.clients = []
        for _ in range(2):
            proto = HttpServerProtocol(ServerContext(handler, ServerLimits(), loop))
            proto.connection_made(cast(asyncio.Transport, _Wire(self.down)))
            self.clients.append(proto)

    def _busy(self) -> UpstreamConnection:
        idle = self.pool._idle.get(_UPSTREAM, ())
        return next(conn for conn in self.upstreams if conn not in idle)

    async def one(self) -> None:
        """One request answered from the fast path, start to finish inside callbacks."""
        self.clients[0].data_received(self.request)
        self._busy().data_received(RESPONSE)

    async def queued_pair(self) -> None:
        """Two requests with CC 1: the second waits for the first's slot."""
        self.clients[0].data_received(self.request)
        self.clients[1].data_received(self.request)
        self._busy().data_received(RESPONSE)
        await asyncio.sleep(0)  # the grant runs from the event loop
        self._busy().data_received(RESPONSE)

    def check_answers(self, expected: int) -> None:
        answers = [chunk for chunk in self.down if chunk.startswith(b"HTTP/1.1 ")]
        good = sum(chunk.startswith(b"HTTP/1.1 200 OK\r\n") for chunk in answers)
        if good != expected or len(answers) != expected:
            raise RuntimeError(f"{good} good answers of {len(answers)}, expected {expected}")
        self.down.clear()
        self.up.clear()


def _queue_proxy(pool: UpstreamPool, loop: asyncio.AbstractEventLoop, cc: int) -> Handler:
    state = QueueProxyState(
        pool=pool,
        user_host=_UPSTREAM[0],
        user_port=_UPSTREAM[1],
        stats=RequestStats(loop.time()),
        drainer=Drainer(30.0, loop),
        prober=cast(ReadinessProber, None),  # probes never reach the fast path
        breaker=Breaker(10 * cc, cc, cc) if cc else None,
        metrics=RequestMetrics(
            namespace="default",
            service="hello",
            configuration="hello",
            revision="hello-00001",
            pod_name="hello-00001-deployment-0",
            queue_depth_enabled=cc > 0,
        ),
        request_log=None,
        log_probes=False,
        deadline=Deadline(300.0),
    )
    return QueueProxyHandler(state)


def _activator(pool: UpstreamPool) -> Handler:
    """The activator with one CC 0 revision routed by Host, its one pod already healthy."""
    revision = Revision(name="hello-00001", namespace="default", endpoints=(_DEST,))
    route = Route(name="hello", namespace="default", traffic=(TrafficTarget("hello-00001", 100),))
    table = RouteTable.build(RoutingConfig(routes=(route,), revisions=(revision,)))
    throttler = RevisionThrottler(revision, 100)
    throttler.apply([_DEST])
    handler = ActivatorHandler(
        pool, ConcurrencyReporter("activator-0"), ActivatorMetrics("activator-0", False)
    )
    handler.snapshot = Snapshot(table, {revision.key: throttler})
    return handler


Step = Callable[[], Awaitable[None]]


def build(target: str, loop: asyncio.AbstractEventLoop) -> tuple[Rig, Step, int]:
    """The rig for ``target``, its step, and how many requests one step serves."""
    pool = UpstreamPool()
    if target == "engine":
        handler: Handler = Passthrough(pool, *_UPSTREAM)
    elif target == "queue-proxy":
        handler = _queue_proxy(pool, loop, 0)
    elif target == "queue-proxy-cc10":
        handler = _queue_proxy(pool, loop, 10)
    elif target == "queue-proxy-queued":
        handler = _queue_proxy(pool, loop, 1)
    elif target == "queue-proxy-pair":
        handler = _queue_proxy(pool, loop, 2)
    elif target == "activator":
        handler = _activator(pool)
    else:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    rig = Rig(handler, pool, loop, ACTIVATOR_REQUEST if target == "activator" else REQUEST)
    if target in ("queue-proxy-queued", "queue-proxy-pair"):
        return rig, rig.queued_pair, 2
    return rig, rig.one, 1


async def drive(target: str, requests: int) -> None:
    """Warm up, then serve ``requests`` requests (rounded down to whole steps)."""
    rig, step, per_step = build(target, asyncio.get_running_loop())
    settle_gc()  # what every component does once started, so collections cost the same
    for _ in range(WARM_UP // per_step):
        await step()
    rig.check_answers(WARM_UP // per_step * per_step)
    for _ in range(requests // per_step):
        await step()
        if len(rig.down) > 2000:
            rig.down.clear()
            rig.up.clear()


async def check(target: str, requests: int = 300) -> list[str]:
    """Serve ``requests`` requests; return what fails the hot-path rules (empty: all good)."""
    rig, step, per_step = build(target, asyncio.get_running_loop())
    for _ in range(20):
        await step()
    rig.check_answers(20 * per_step)
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(requests // per_step):
            await step()
        gc.collect()
        left = collections.Counter(type(obj).__name__ for obj in gc.garbage)
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
    rig.check_answers(requests // per_step * per_step)
    return [f"{n} {name} objects left in reference cycles" for name, n in left.items()]


def _instructions(target: str, requests: int) -> int:
    """User-space instructions of one driver run under callgrind."""
    with tempfile.TemporaryDirectory(prefix="sluice-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.instructions",
            "--driver",
            target,
            str(requests),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{target}: the driver failed under valgrind: {tail[0]}")
        for line in out.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"{target}: callgrind wrote no summary line")


def measure(target: str) -> float:
    """Instructions per request of ``target`` (thousands)."""
    small = _instructions(target, SMALL_N)
    large = _instructions(target, LARGE_N)
    return (large - small) / (LARGE_N - SMALL_N) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    parser.add_argument("--check", action="store_true", help="hot-path rules, no valgrind")
    parser.add_argument("--driver", nargs=2, metavar=("TARGET", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver:
        uvloop.run(drive(args.driver[0], int(args.driver[1])))
        return 0
    targets = args.targets or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)}")
    if args.check:
        failures = [f"{t}: {why}" for t in targets for why in uvloop.run(check(t))]
        for line in failures:
            print(line, file=sys.stderr)
        print("hot-path rules: " + ("FAILED" if failures else f"ok ({', '.join(targets)})"))
        return 1 if failures else 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    print("| target | user-space instructions per request |\n|---|---:|")
    for target in targets:
        print(f"| {target} | {measure(target):.1f}k |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
