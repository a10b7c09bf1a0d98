"""The Knative scaler against an in-process websocket server standing in for the autoscaler.

The fake speaks what Knative's statserver does: it accepts a websocket on ``/``, reads binary
``WireStatMessages`` frames, and can close with 1012, drop the TCP connection, stop answering
pings, or go away altogether. Timings are shrunk so every test runs in well under a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from activator.knative_scaler import Backoff, ConnState, KnativeScaler, Timings
from activator.stats import StatBatch
from proxy.dataplane.autoscaler_stat_pb import Stat, decode_wire_stats
from tests.ports import closed_port

pytestmark = pytest.mark.timeout(10)

POKE: StatBatch = [
    ("ns", "rev-1", Stat(pod_name="activator-0", average_concurrent_requests=1, request_count=1))
]
REPORT: StatBatch = [
    ("ns", "rev-1", Stat(pod_name="activator-0", average_concurrent_requests=2.5, request_count=7)),
    ("other", "rev-2", Stat(pod_name="activator-0")),
]
#: Short clocks: a ping every 50 ms, a 250 ms read deadline, quick back-off.
FAST = Timings(
    handshake_timeout=0.5,
    pong_timeout=0.25,
    ping_interval=0.05,
    close_timeout=0.2,
    backoff=Backoff(initial=0.01, cap=0.05),
)
WAIT = 3.0  # seconds any single awaited event may take


class FakeAutoscaler:
    """A websocket server on 127.0.0.1 that records frames and connections.

    ``answer_pings`` False makes it ignore pings (a hung autoscaler). Each accepted socket is
    put on ``accepted``; frames land on ``frames`` as ``(type, data)``.
    """

    def __init__(self, answer_pings: bool = True) -> None:
        self.answer_pings = answer_pings
        self.frames: asyncio.Queue[tuple[aiohttp.WSMsgType, Any]] = asyncio.Queue()
        self.accepted: asyncio.Queue[web.WebSocketResponse] = asyncio.Queue()
        #: The TCP transport under each accepted socket, in order, to cut it.
        self.transports: list[asyncio.Transport] = []
        self.connections = 0
        self.pings = 0
        self.pinged = asyncio.Event()
        self.pings_wanted = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        assert request.transport is not None
        self.transports.append(request.transport)
        self.connections += 1
        self.accepted.put_nowait(ws)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.PING:
                self.pings += 1
                if self.pings_wanted and self.pings >= self.pings_wanted:
                    self.pinged.set()
                if self.answer_pings:
                    await ws.pong(msg.data)
            else:
                self.frames.put_nowait((msg.type, msg.data))
        return ws


@pytest.fixture
async def server() -> AsyncIterator[FakeAutoscaler]:
    fake = FakeAutoscaler()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


class Recorder:
    """``on_state`` callback whose calls can be awaited one by one."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self._queue: asyncio.Queue[bool] = asyncio.Queue()

    def __call__(self, connected: bool) -> None:
        self.calls.append(connected)
        self._queue.put_nowait(connected)

    async def next(self) -> bool:
        return await asyncio.wait_for(self._queue.get(), WAIT)


def make_scaler(url: str, timings: Timings = FAST, **kw: Any) -> tuple[KnativeScaler, Recorder]:
    states = Recorder()
    scaler = KnativeScaler(url, timings=timings, on_state=states, **kw)
    return scaler, states


async def frame(server: FakeAutoscaler) -> tuple[aiohttp.WSMsgType, Any]:
    return await asyncio.wait_for(server.frames.get(), WAIT)


async def test_batches_are_binary_frames_that_decode_to_the_same_batch(
    server: FakeAutoscaler,
) -> None:
    scaler, states = make_scaler(server.url)
    scaler.start()
    try:
        assert await states.next() is True
        assert scaler.connected and scaler.reachable == 1
        scaler.poke(POKE)
        scaler.report(REPORT)
        for want in (POKE, REPORT):
            kind, data = await frame(server)
            assert kind is aiohttp.WSMsgType.BINARY
            assert decode_wire_stats(data) == want
        assert (scaler.sent, scaler.dropped) == (2, 0)
    finally:
        await scaler.close()


async def test_poke_goes_out_at_once(server: FakeAutoscaler) -> None:
    # A ping interval and read deadline of minutes: only the poke itself can produce a frame.
    slow = Timings(ping_interval=60, pong_timeout=120, close_timeout=0.2)
    scaler, states = make_scaler(server.url, slow)
    scaler.start()
    try:
        assert await states.next() is True
        started = time.monotonic()
        scaler.poke(POKE)
        _, data = await frame(server)
        assert time.monotonic() - started < 0.5
        assert decode_wire_stats(data) == POKE
    finally:
        await scaler.close()


async def test_frames_from_the_server_are_discarded(server: FakeAutoscaler) -> None:
    scaler, states = make_scaler(server.url)
    scaler.start()
    try:
        assert await states.next() is True
        ws = await asyncio.wait_for(server.accepted.get(), WAIT)
        await ws.send_str("hello")
        await ws.send_bytes(b"\x00\x01")
        scaler.poke(POKE)
        _, data = await frame(server)
        assert decode_wire_stats(data) == POKE
        assert scaler.connected and states.calls == [True]
    finally:
        await scaler.close()


async def test_reconnects_after_the_server_drops_the_connection(server: FakeAutoscaler) -> None:
    scaler, states = make_scaler(server.url)
    scaler.start()
    try:
        assert await states.next() is True
        ws = await asyncio.wait_for(server.accepted.get(), WAIT)
        await ws.close()  # a normal close: redialled after one back-off step
        assert await states.next() is False
        assert await states.next() is True
        await asyncio.wait_for(server.accepted.get(), WAIT)
        # The TCP connection vanishes without a close frame.
        server.transports[-1].abort()
        assert await states.next() is False
        assert await states.next() is True
        scaler.poke(POKE)
        _, data = await frame(server)
        assert decode_wire_stats(data) == POKE
        assert (scaler.reconnects, scaler.errors, server.connections) == (2, 2, 3)
    finally:
        await scaler.close()


@pytest.mark.parametrize("hang_up", [False, True], ids=["close-handshake", "knative-statserver"])
async def test_close_code_1012_redials_without_back_off(
    server: FakeAutoscaler, hang_up: bool
) -> None:
    # One back-off step would take 30 s; the test's waits allow 3.
    patient = Timings(close_timeout=0.2, backoff=Backoff(initial=30, cap=30, jitter=0))
    scaler, states = make_scaler(server.url, patient)
    scaler.start()
    try:
        assert await states.next() is True
        ws = await asyncio.wait_for(server.accepted.get(), WAIT)
        if hang_up:
            # Knative's statserver on shutdown: a close frame (1012 "Restarting"), then it
            # closes the TCP connection without waiting for the reply.
            payload = (1012).to_bytes(2, "big") + b"Restarting"
            transport = server.transports[-1]
            transport.write(bytes([0x88, len(payload)]) + payload)
            transport.close()
        else:
            await ws.close(code=1012)  # WSCloseCode.SERVICE_RESTART
        assert await states.next() is False
        assert await states.next() is True
        assert (server.connections, scaler.reconnects) == (2, 1)
    finally:
        await scaler.close()


async def test_server_down_drops_and_counts_batches_then_recovers(
    server: FakeAutoscaler,
) -> None:
    scaler, states = make_scaler(server.url)
    scaler.start()
    try:
        assert await states.next() is True
        port = server.port
        await server.stop()
        assert await states.next() is False
        assert not scaler.connected and scaler.reachable == 0
        assert scaler.state is ConnState.CONNECTING
        scaler.poke(POKE)
        scaler.report(REPORT)
        assert (scaler.dropped, scaler.sent) == (2, 0)
        # The autoscaler comes back on the same address: the back-off loop finds it.
        await server.start(port)
        assert await states.next() is True
        scaler.poke(POKE)
        _, data = await frame(server)
        assert decode_wire_stats(data) == POKE
        assert states.calls == [True, False, True]
    finally:
        await scaler.close()


async def test_nothing_listening_never_connects_and_drops_everything() -> None:
    scaler, states = make_scaler(f"ws://127.0.0.1:{closed_port()}/")
    scaler.start()
    try:
        scaler.poke(POKE)
        scaler.report(REPORT)
        assert (scaler.connected, scaler.dropped, scaler.sent) == (False, 2, 0)
        assert states.calls == []
    finally:
        await scaler.close()
    assert states.calls == []  # never connected, so never disconnected either


async def test_handshake_that_hangs_is_abandoned_and_redialled() -> None:
    accepted = 0
    two = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writers.append(w)  # keep it open and say nothing
        if accepted >= 2:
            two.set()

    tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    quick = Timings(handshake_timeout=0.1, close_timeout=0.2, backoff=Backoff(0.01, cap=0.02))
    scaler, states = make_scaler(f"ws://127.0.0.1:{port}/", quick)
    scaler.start()
    try:
        await asyncio.wait_for(two.wait(), WAIT)
        assert not scaler.connected and states.calls == []
    finally:
        await scaler.close()
        for w in writers:
            w.close()
        tcp.close()
        await tcp.wait_closed()


async def test_queue_bound_is_honoured(server: FakeAutoscaler) -> None:
    scaler, states = make_scaler(server.url, queue_size=3)
    scaler.start()
    try:
        assert await states.next() is True
        # No await between the pokes: the sender cannot run, so only three fit.
        for _ in range(10):
            scaler.poke(POKE)
        assert scaler.dropped == 7
        for _ in range(3):
            _, data = await frame(server)
            assert decode_wire_stats(data) == POKE
        assert scaler.sent == 3
        scaler.report(REPORT)  # room again once drained
        _, data = await frame(server)
        assert decode_wire_stats(data) == REPORT
        assert (scaler.sent, scaler.dropped) == (4, 7)
    finally:
        await scaler.close()


async def test_pongs_keep_a_silent_connection_alive(server: FakeAutoscaler) -> None:
    # 18 pings at 50 ms span more than twice the 400 ms read deadline; no data flows.
    timings = Timings(pong_timeout=0.4, ping_interval=0.05, close_timeout=0.2)
    server.pings_wanted = 18
    scaler, states = make_scaler(server.url, timings)
    scaler.start()
    try:
        assert await states.next() is True
        await asyncio.wait_for(server.pinged.wait(), WAIT)
        assert scaler.connected and states.calls == [True]
        assert (scaler.reconnects, scaler.errors, server.connections) == (0, 0, 1)
    finally:
        await scaler.close()


async def test_a_failing_on_state_callback_is_contained(server: FakeAutoscaler) -> None:
    seen: asyncio.Queue[bool] = asyncio.Queue()

    def explode(connected: bool) -> None:
        seen.put_nowait(connected)
        raise RuntimeError("callback bug")

    scaler = KnativeScaler(server.url, timings=FAST, on_state=explode)
    scaler.start()
    try:
        assert await asyncio.wait_for(seen.get(), WAIT) is True
        scaler.poke(POKE)
        _, data = await frame(server)
        assert decode_wire_stats(data) == POKE and scaler.connected
    finally:
        await scaler.close()
    assert seen.get_nowait() is False  # told of the close too


async def test_a_server_that_stops_answering_pings_is_dropped_and_redialled() -> None:
    fake = FakeAutoscaler(answer_pings=False)
    await fake.start()
    scaler, states = make_scaler(fake.url)
    scaler.start()
    try:
        assert await states.next() is True
        up = time.monotonic()
        assert await states.next() is False
        # The read deadline (250 ms) passed with pings unanswered.
        assert time.monotonic() - up >= FAST.pong_timeout * 0.9
        assert fake.pings >= 2
        assert await states.next() is True  # redialled
        assert scaler.errors == 1 and scaler.reconnects == 1
    finally:
        await scaler.close()
        await fake.stop()


async def test_close_leaves_no_task_behind(server: FakeAutoscaler) -> None:
    def ours() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t.get_name().startswith("knative-scaler")}

    scaler, states = make_scaler(server.url)
    scaler.start()
    assert await states.next() is True
    scaler.poke(POKE)
    await frame(server)
    assert ours()
    await scaler.close()
    assert ours() == set()
    assert states.calls == [True, False]
    assert scaler.state is ConnState.CLOSED and not scaler.connected
    # The server sees the socket closed.
    ws = await asyncio.wait_for(server.accepted.get(), WAIT)
    assert ws.closed
    await scaler.close()  # idempotent
    scaler.poke(POKE)  # after close: dropped, never raises
    assert scaler.dropped == 1


async def test_given_session_is_used_and_left_open(server: FakeAutoscaler) -> None:
    async with aiohttp.ClientSession() as session:
        scaler, states = make_scaler(server.url, session=session)
        scaler.start()
        try:
            assert await states.next() is True
        finally:
            await scaler.close()
        assert not session.closed
