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
``queue-proxy-queued`` is what queueing costs), ``activator`` (CC 0, one route's Host, one
pod already healthy: routing, throttler and forwarding, no probing), and ``engine-h2`` and
``queue-proxy-h2`` (CC 0): the same handlers over HTTP/2, as ``h2load -c 1 -m 1`` and
``nghttpd`` speak it (``H2Rig``).

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
import struct
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

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

if TYPE_CHECKING:
    from proxy.http2 import H2ServerProtocol

TARGETS = (
    "engine",
    "queue-proxy",
    "queue-proxy-cc10",
    "queue-proxy-queued",
    "queue-proxy-pair",
    "activator",
    "engine-h2",
    "queue-proxy-h2",
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


# ------------------------------------------------------------------------------ HTTP/2

#: What ``h2load`` sends per request (in its order), and what ``nghttpd`` answers.
H2_REQUEST = (
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"127.0.0.1:8012"),
    (b":path", b"/"),
    (b"user-agent", b"h2load/1.52.0"),
)
H2_RESPONSE = (
    (b":status", b"200"),
    (b"server", b"nghttpd nghttp2/1.52.0"),
    (b"date", b"Sun, 22 Nov 2026 08:30:00 GMT"),
    (b"content-length", b"12"),
)
BODY = b"hello world\n"

# The wire format, written here rather than taken from ``proxy.h2frames``, so that the
# codec under test does not make its own input.
_FRAME = struct.Struct(">IBI")  # length << 8 | type, flags, stream id (RFC 9113 section 4.1)
_DATA, _HEADERS, _SETTINGS, _WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x8
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_WINDOW = 2**30 - 1  # h2load's default stream and connection windows (``-w 30 -W 30``)


def _frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) << 8 | kind, flags, sid) + payload


def _settings(*pairs: tuple[int, int]) -> bytes:
    return _frame(_SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


#: The client's start: the preface, SETTINGS (no push, its stream window), the connection
#: window opened as far, and the ACK of the server's SETTINGS (sent before this is read).
H2_CLIENT_START = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    + _settings((0x2, 0), (0x4, _WINDOW))
    + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _WINDOW - 65535))
    + _frame(_SETTINGS, _ACK, 0)
)
#: The upstream's start: its SETTINGS (``nghttpd``'s stream limit) and the ACK of ours.
H2_UPSTREAM_START = _settings((0x3, 100)) + _frame(_SETTINGS, _ACK, 0)


def _h2_feeds(first: int, count: int) -> tuple[list[bytes], list[bytes]]:
    """What the client and the upstream send for requests ``first`` to ``first + count - 1``
    (request k on stream 2k + 1; the proxy's upstream calls get the same ids). The first
    header blocks add their fields to the HPACK dynamic table and the later ones refer to
    them, as h2load's and nghttpd's do, so from the second request on each block is the same
    bytes again (the codec's decoded-block cache is exercised, as when serving h2load)."""
    import hpack  # only the HTTP/2 targets need it

    encoder = hpack.Encoder()
    request_first, request = encoder.encode(H2_REQUEST), encoder.encode(H2_REQUEST)
    encoder = hpack.Encoder()
    response_first, response = encoder.encode(H2_RESPONSE), encoder.encode(H2_RESPONSE)
    requests: list[bytes] = []
    responses: list[bytes] = []
    if first == 0:
        requests.append(_frame(_HEADERS, _END_STREAM | _END_HEADERS, 1, request_first))
        responses.append(
            _frame(_HEADERS, _END_HEADERS, 1, response_first) + _frame(_DATA, _END_STREAM, 1, BODY)
        )
        first, count = 1, count - 1
    # The others differ only in their stream id: packed by C loops (a Struct over map), so
    # that the driver's own work stays a small part of each measured request.
    sids = range(2 * first + 1, 2 * (first + count), 2)
    packer = struct.Struct(f">IBI{len(request)}s")
    requests += map(
        packer.pack,
        repeat(len(request) << 8 | _HEADERS),
        repeat(_END_STREAM | _END_HEADERS),
        sids,
        repeat(request),
    )
    packer = struct.Struct(f">IBI{len(response)}sIBI{len(BODY)}s")
    responses += map(
        packer.pack,
        repeat(len(response) << 8 | _HEADERS),
        repeat(_END_HEADERS),
        sids,
        repeat(response),
        repeat(len(BODY) << 8 | _DATA),
        repeat(_END_STREAM),
        sids,
        repeat(BODY),
    )
    return requests, responses


class _H2Wire(_Wire):
    """A client transport that can be handed to another protocol (``proxy.http2.serve_h2``)."""

    protocol: asyncio.BaseProtocol | None = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self.protocol


class H2Rig:
    """One HTTP/2 client connection (prior knowledge, switched from ``HttpServerProtocol``
    as a real one is) and one pooled h2c upstream connection around ``handler``.

    A request takes two loop turns, as its two reads do when served: its HEADERS in (a
    handler's task, if it takes one, runs and the request goes upstream), then the
    upstream's HEADERS and DATA (the answer goes out); each connection writes what a turn
    queued once. The turns are chained as callbacks and ``batch`` awaits ``BATCH`` requests
    at once: a task waking per turn would cost the driver about 10k instructions per
    request, a callback about half of that, most of it the loop's turn itself."""

    #: Requests one ``batch`` serves, and how many requests' bytes are made at a time.
    BATCH = 50
    FEED = 1000

    def __init__(
        self, handler: Handler, pool: UpstreamPool, loop: asyncio.AbstractEventLoop
    ) -> None:
        from proxy.h2client import H2Upstream  # as the engine: HTTP/2 only
        from proxy.http2 import H2ServerProtocol

        self.loop = loop
        self.down: list[bytes] = []
        self.up: list[bytes] = []
        self.requests, self.responses = _h2_feeds(0, self.FEED)
        self.served = 0
        self._left = 0
        self._done: asyncio.Future[None] | None = None
        self._answers: _H2Answers | None = None
        # The upstream connection as ``UpstreamPool.connect_h2`` keeps it, its peer settled.
        self.upstream = H2Upstream(pool, _UPSTREAM, loop)
        self.upstream.connection_made(cast(asyncio.Transport, _Wire(self.up)))
        pool._h2.setdefault(_UPSTREAM, []).append(self.upstream)
        self.upstream.data_received(H2_UPSTREAM_START)
        wire = _H2Wire(self.down)
        first = HttpServerProtocol(ServerContext(handler, ServerLimits(), loop))
        first.connection_made(cast(asyncio.Transport, wire))
        first.data_received(H2_CLIENT_START)
        if not isinstance(wire.protocol, H2ServerProtocol):
            raise RuntimeError("the client connection was not switched to HTTP/2")
        self.client: H2ServerProtocol = wire.protocol

    async def batch(self) -> None:
        """Serve ``BATCH`` requests, one after the other."""
        self._left = self.BATCH
        self._done = done = self.loop.create_future()
        self.loop.call_soon(self._request)
        await done

    def _request(self) -> None:
        if not self._left:
            assert self._done is not None
            self._done.set_result(None)
            return
        self._left -= 1
        n = self.served
        if n == len(self.requests):
            more = _h2_feeds(n, self.FEED)
            self.requests += more[0]
            self.responses += more[1]
        self.client.data_received(self.requests[n])
        self.loop.call_soon(self._response)

    def _response(self) -> None:
        n = self.served
        self.served = n + 1
        self.upstream.data_received(self.responses[n])
        self.loop.call_soon(self._request)

    def check_answers(self, expected: int) -> None:
        if self._answers is None:
            self._answers = _H2Answers()
        self._answers.check(self.down, expected)
        self.down.clear()
        self.up.clear()


class _H2Answers:
    """What the proxy wrote to the client, read as a client would with the ``h2`` library
    (only in checks): each stream, in order, must end with a 200 and ``BODY``."""

    #: Streams open at once in the reader (below the server's SETTINGS_MAX_CONCURRENT_STREAMS).
    AHEAD = 50

    def __init__(self) -> None:
        import h2.config  # a dev dependency, never on the measured path
        import h2.connection

        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.next_sid = 1

    def check(self, chunks: list[bytes], expected: int) -> None:
        import h2.events

        conn = self.conn
        first, end = self.next_sid, self.next_sid + 2 * expected
        status: dict[int, object] = {}
        bodies: dict[int, bytes] = {}
        ended: set[int] = set()
        for chunk in chunks:
            # Open (send, unsent) the streams the answers may come on, a few ahead.
            while self.next_sid < end and self.next_sid - first - 2 * len(ended) < 2 * self.AHEAD:
                conn.send_headers(self.next_sid, H2_REQUEST, end_stream=True)
                self.next_sid += 2
            conn.data_to_send()
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id or 0] = dict(event.headers or ()).get(b":status")
                elif isinstance(event, h2.events.DataReceived):
                    sid = event.stream_id or 0
                    bodies[sid] = bodies.get(sid, b"") + (event.data or b"")
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id or 0)
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise RuntimeError(f"the proxy ended a stream or the connection: {event}")
        good = sum(
            status.get(sid) == b"200" and bodies.get(sid) == BODY and sid in ended
            for sid in range(first, end, 2)
        )
        if good != expected or len(ended) != expected or self.next_sid != end:
            raise RuntimeError(f"{good} good answers of {len(ended)}, expected {expected}")


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


def build(target: str, loop: asyncio.AbstractEventLoop) -> tuple[Rig | H2Rig, Step, int]:
    """The rig for ``target``, its step, and how many requests one step serves."""
    pool = UpstreamPool()
    if target in ("engine-h2", "queue-proxy-h2"):
        h2_handler: Handler
        if target == "engine-h2":
            h2_handler = Passthrough(pool, *_UPSTREAM)
        else:
            h2_handler = _queue_proxy(pool, loop, 0)
        h2_rig = H2Rig(h2_handler, pool, loop)
        return h2_rig, h2_rig.batch, H2Rig.BATCH
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
