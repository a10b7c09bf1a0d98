"""HTTP/2 through the engine, with real peers: grpcio both sides, nghttp, and raw frames.

The proxy under test is the engine's passthrough (``HttpServer`` + ``forward``): h2c in,
h2c out (the upstream protocol mirrors the client's), the same ``Forwarding`` as HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator

import grpc
import h2.events
import h2.settings
import pytest
from hyperframe.frame import WindowUpdateFrame

from proxy.exchange import Exchange
from proxy.limits import ServerLimits
from proxy.server import HttpServer
from tests.component.engine_harness import EngineRig, ProxyUnderTest
from tests.component.h2_peers import GoawayOnce, GrpcEcho, RawH2, channel, method

pytestmark = pytest.mark.timeout(60)

NGHTTP = shutil.which("nghttp")


@pytest.fixture
async def engine() -> AsyncIterator[EngineRig]:
    rig = EngineRig()
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
def grpc_app() -> Iterator[GrpcEcho]:
    with GrpcEcho() as app:
        yield app


async def grpc_proxy(engine: EngineRig, app: GrpcEcho, **limits: int) -> ProxyUnderTest:
    return await engine.proxy(app.port, ServerLimits(**limits) if limits else None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- gRPC


async def test_grpc_unary_and_status_with_message_pass_intact(
    engine: EngineRig, grpc_app: GrpcEcho
) -> None:
    px = await grpc_proxy(engine, grpc_app)

    def calls() -> tuple[bytes, grpc.StatusCode, str]:
        with channel(px.server.port) as ch:
            echoed = method(ch, "Unary", "uu")(b"hi", timeout=5)
            try:
                method(ch, "Fail", "uu")(b"x", timeout=5)
            except grpc.RpcError as err:
                return echoed, err.code(), err.details()
        raise AssertionError("Fail did not fail")

    echoed, code, details = await asyncio.to_thread(calls)
    assert echoed == b"echo:hi"
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "no such thing: x")


async def test_grpc_streams_of_every_shape_keep_every_message_in_order(
    engine: EngineRig, grpc_app: GrpcEcho
) -> None:
    px = await grpc_proxy(engine, grpc_app)

    def calls() -> tuple[list[bytes], bytes, list[bytes]]:
        with channel(px.server.port) as ch:
            streamed = list(method(ch, "Server", "us")(b"500", timeout=10))
            joined = method(ch, "Client", "su")(iter([b"a", b"b", b"c"]), timeout=10)
            bidi = list(method(ch, "Bidi", "ss")((b"m%d" % i for i in range(1000)), timeout=20))
        return streamed, joined, bidi

    streamed, joined, bidi = await asyncio.to_thread(calls)
    assert streamed == [b"%d" % i for i in range(500)]
    assert joined == b"a|b|c"
    assert bidi == [b"m%d" % i for i in range(1000)]


async def test_200_concurrent_unary_calls_share_multiplexed_connections(
    engine: EngineRig, grpc_app: GrpcEcho
) -> None:
    px = await grpc_proxy(engine, grpc_app)

    def calls() -> list[bytes]:
        with channel(px.server.port) as ch:
            unary = method(ch, "Unary", "uu")
            pending = [unary.future(b"%d" % i, timeout=20) for i in range(200)]
            return [f.result() for f in pending]

    assert await asyncio.to_thread(calls) == [b"echo:%d" % i for i in range(200)]
    # One dial shared by the burst, not one per stream: 100 streams fit before the app's
    # SETTINGS name its limit (Go's assumption), so at most two connections.
    assert 1 <= len(px.pool._h2[("127.0.0.1", grpc_app.port)]) <= 2


async def test_a_cancelled_call_is_cancelled_upstream(
    engine: EngineRig, grpc_app: GrpcEcho
) -> None:
    px = await grpc_proxy(engine, grpc_app)

    def call() -> grpc.StatusCode:
        with channel(px.server.port) as ch:
            future = method(ch, "Hold", "uu").future(b"x", timeout=20)
            assert grpc_app.started.wait(5)
            future.cancel()
            try:
                future.result()
            except grpc.FutureCancelledError:
                return grpc.StatusCode.CANCELLED
        raise AssertionError("not cancelled")

    assert await asyncio.to_thread(call) == grpc.StatusCode.CANCELLED
    # The client's RST_STREAM reached the app as a cancel of its own stream.
    assert await asyncio.to_thread(grpc_app.cancelled.wait, 5)


# ------------------------------------------------------------------- plain h2 peers


async def echo_handler(ex: Exchange) -> None:
    if ex.target.startswith(b"/big"):
        size = int(ex.target.split(b"=")[1])
        ex.start_response(200, [], size)
        for _ in range(size // 65536):
            ex.write(b"x" * 65536)
            await ex.drain()
        ex.end()
        return
    body = b""
    while chunk := await ex.read_body():
        body += chunk
    answer = b"%s %s %s %d" % (ex.method, ex.target, ex.version.encode(), len(body))
    ex.start_response(200, [(b"X-Host", ex.header(b"host") or b"")], len(answer))
    ex.write(answer)
    ex.end()


async def echo_upstream() -> HttpServer:
    server = HttpServer(echo_handler)
    await server.start("127.0.0.1", 0)
    return server


@pytest.mark.parametrize("upgrade", [False, True], ids=["prior-knowledge", "upgrade-h2c"])
async def test_nghttp_through_the_proxy_both_ways_in(engine: EngineRig, upgrade: bool) -> None:
    assert NGHTTP is not None, "nghttp (Debian nghttp2-client) is missing; .ci/run installs it"
    up = await echo_upstream()
    try:
        px = await engine.proxy(up.port)
        args = [NGHTTP or "nghttp", "-d", "-"]
        if upgrade:
            args.append("-u")
        args.append(f"http://127.0.0.1:{px.server.port}/hello?x=1")
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(b"x" * 100_000), 20)
        assert proc.returncode == 0, err
        assert out == b"POST /hello?x=1 2.0 100000"
    finally:
        await up.shutdown(1)


# ------------------------------------------------------------------------- abuse


async def held_upstream() -> tuple[HttpServer, asyncio.Event]:
    release = asyncio.Event()

    async def hold(ex: Exchange) -> None:
        await release.wait()
        ex.send(200, b"late")

    server = HttpServer(hold)
    await server.start("127.0.0.1", 0)
    return server, release


async def test_streams_beyond_the_advertised_limit_are_refused(engine: EngineRig) -> None:
    up, release = await held_upstream()
    try:
        px = await engine.proxy(up.port, ServerLimits(h2_max_streams=2))
        client = await RawH2.connect(px.server.port)
        await client.read_events(0.3)
        assert client.h2.remote_settings.max_concurrent_streams == 2
        # The client ignores the limit (h2 would refuse to open a third stream).
        client.h2.remote_settings.acknowledge()
        sids = [client.request(f"/{i}") for i in range(2)]
        await client.flush()
        await asyncio.sleep(0.2)
        client.h2.update_settings({})  # a harmless frame, so the third HEADERS goes alone
        client.h2.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 100
        client.h2.remote_settings.acknowledge()
        third = client.request("/2")
        await client.flush()
        events = await client.until(h2.events.StreamReset)
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert [(e.stream_id, e.error_code) for e in resets] == [(third, 7)]  # REFUSED_STREAM
        release.set()
        events = await client.until(h2.events.StreamEnded)
        answered = {e.stream_id for e in client.events if isinstance(e, h2.events.ResponseReceived)}
        assert answered == set(sids)
        await client.close()
    finally:
        release.set()
        await up.shutdown(1)


async def test_rapid_reset_is_bounded_then_goaway(engine: EngineRig) -> None:
    up, release = await held_upstream()
    try:
        px = await engine.proxy(up.port, ServerLimits(h2_max_abuse_per_second=50))
        client = await RawH2.connect(px.server.port)
        for _ in range(200):
            sid = client.request("/")
            client.h2.reset_stream(sid, 8)
        await client.flush()
        events = await client.until(h2.events.ConnectionTerminated)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == 11  # ENHANCE_YOUR_CALM
        assert px.server.connection_count == 0 or client.closed
        await client.close()
    finally:
        release.set()
        await up.shutdown(1)


@pytest.mark.parametrize("flood", ["ping", "settings"])
async def test_control_frame_floods_are_bounded_then_goaway(engine: EngineRig, flood: str) -> None:
    up = await echo_upstream()
    try:
        px = await engine.proxy(up.port, ServerLimits(h2_max_abuse_per_second=50))
        client = await RawH2.connect(px.server.port)
        for i in range(300):
            if flood == "ping":
                client.h2.ping(b"%08d" % i)
            else:
                client.h2.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 4096 + i})
        await client.flush()
        events = await client.until(h2.events.ConnectionTerminated)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == 11
        await client.close()
    finally:
        await up.shutdown(1)


async def test_oversize_header_list_is_refused_within_the_limit(engine: EngineRig) -> None:
    up = await echo_upstream()
    try:
        px = await engine.proxy(up.port, ServerLimits(max_total_header_bytes=4096))
        client = await RawH2.connect(px.server.port)
        await client.read_events(0.3)
        client.request("/", extra=[(f"x-{i}", "v" * 100) for i in range(100)])
        await client.flush()
        events = await client.until(h2.events.ConnectionTerminated)
        assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events) or client.closed
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
        await client.close()
    finally:
        await up.shutdown(1)


async def test_window_overflow_is_a_flow_control_error(engine: EngineRig) -> None:
    up = await echo_upstream()
    try:
        px = await engine.proxy(up.port)
        client = await RawH2.connect(px.server.port)
        await client.read_events(0.3)
        frame = WindowUpdateFrame(0)
        frame.window_increment = 2**31 - 1
        client.send_raw(frame.serialize())
        events = await client.until(h2.events.ConnectionTerminated)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == 3  # FLOW_CONTROL_ERROR
        await client.close()
    finally:
        await up.shutdown(1)


async def test_a_protocol_error_is_goaway_and_close(engine: EngineRig) -> None:
    up = await echo_upstream()
    try:
        px = await engine.proxy(up.port)
        client = await RawH2.connect(px.server.port)
        await client.read_events(0.3)
        # DATA on stream 0: a nine-byte frame header (length, type 0, no flags, stream 0).
        client.send_raw(struct.pack(">I", 4)[1:] + b"\x00\x00" + struct.pack(">I", 0) + b"nope")
        events = await client.until(h2.events.ConnectionTerminated)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == 1  # PROTOCOL_ERROR
        await client.read_events(1.0)
        assert client.closed
        await client.close()
    finally:
        await up.shutdown(1)


async def test_a_stalled_reader_holds_back_its_own_stream_only(engine: EngineRig) -> None:
    up = await echo_upstream()
    try:
        px = await engine.proxy(up.port)
        client = await RawH2.connect(px.server.port)
        await client.read_events(0.3)
        # A 16 MiB answer the client never acknowledges: 64 KiB (its window) is all it gets.
        stalled = client.request("/big?size=16777216")
        await client.flush()
        await client.read_events(0.5)
        got = sum(
            len(e.data or b"")
            for e in client.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == stalled
        )
        assert 0 < got <= 65535
        # Meanwhile another stream on the same connection is answered in full.
        other = client.request("/other")
        await client.flush()
        await client.until(h2.events.StreamEnded)
        ended = {e.stream_id for e in client.events if isinstance(e, h2.events.StreamEnded)}
        assert other in ended and stalled not in ended
        await client.close()
    finally:
        await up.shutdown(1)


async def test_a_request_the_upstream_never_processed_is_sent_again(engine: EngineRig) -> None:
    upstream = GoawayOnce()
    port = await upstream.start()
    try:
        px = await engine.proxy(port)
        client = await RawH2.connect(px.server.port)
        # A POST, which is never replayed after it may have run: GOAWAY says it did not.
        sid = client.request("/once", end=False)
        client.h2.end_stream(sid)
        await client.flush()
        events = await client.until(h2.events.StreamEnded)
        data = b"".join(e.data or b"" for e in events if isinstance(e, h2.events.DataReceived))
        assert data == b"second try"
        assert (upstream.connections, upstream.served) == (2, 1)
        await client.close()
    finally:
        await upstream.close()


async def test_a_drain_says_goaway_and_finishes_the_calls_in_flight(
    engine: EngineRig, grpc_app: GrpcEcho
) -> None:
    # (grpcio as the client: the h2 library cannot read a stream's answer after a GOAWAY.)
    px = await grpc_proxy(engine, grpc_app)
    with channel(px.server.port) as ch:
        call = method(ch, "Gate", "uu").future(b"x", timeout=20)
        assert await asyncio.to_thread(grpc_app.started.wait, 5)
        drain = asyncio.create_task(px.server.shutdown(grace=10))
        await asyncio.sleep(0.3)
        assert not drain.done()  # held open by the call in flight
        grpc_app.gate.set()
        assert await asyncio.to_thread(call.result) == b"through:x"
        await asyncio.wait_for(drain, 5)
        assert px.server.connection_count == 0
