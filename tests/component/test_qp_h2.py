"""The queue-proxy's logic applies to every HTTP/2 stream: breaker, probes, metrics.

A grpcio client and app on either side of an in-process queue-proxy: the client speaks h2c
to the queue-proxy, which speaks h2c to the app (it mirrors the client's protocol).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import h2.events
import pytest

from proxy.exchange import Exchange
from proxy.server import HttpServer
from tests.component.h2_peers import GrpcEcho, RawH2, channel, method
from tests.component.test_queueproxy_handler import (
    QpRig,
    lines_of,
    request_count_line,
    scrape_metrics,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def rig() -> AsyncIterator[QpRig]:
    r = QpRig()
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture
def app() -> Iterator[GrpcEcho]:
    with GrpcEcho() as echo:
        yield echo


async def test_one_stream_is_one_request_to_the_breaker_and_the_metrics(
    rig: QpRig, app: GrpcEcho
) -> None:
    # containerConcurrency 1 (queue depth 10): eleven calls multiplexed on one connection
    # reach the app one at a time (the others queue), and each is counted as one request.
    qp = await rig.start(app.port, container_concurrency=1)

    def calls() -> list[bytes]:
        with channel(qp.main.port) as ch:
            slow = method(ch, "Slow", "uu")
            pending = [slow.future(b"%d" % i, timeout=30) for i in range(11)]
            return [f.result() for f in pending]

    assert await asyncio.to_thread(calls) == [b"slow:%d" % i for i in range(11)]
    assert app.max_active == 1
    text = await scrape_metrics(rig, qp)
    assert lines_of(text, "revision_request_count") == [request_count_line(200, "DISABLED", 11)]


async def test_activator_probes_answer_over_h2c(rig: QpRig, app: GrpcEcho) -> None:
    # The activator probes an h2c revision's pods on their h2c port (Knative #13028): the
    # queue-proxy answers the health probe itself, over HTTP/2 as over HTTP/1.1.
    qp = await rig.start(app.port)
    client = await RawH2.connect(qp.main.port)
    try:
        probe = [("k-network-probe", "queue"), ("user-agent", "Knative-Activator-Probe")]
        sid = client.request("/healthz", extra=probe)
        await client.flush()
        events = await client.until(h2.events.StreamEnded)
        heads = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        body = b"".join(e.data or b"" for e in events if isinstance(e, h2.events.DataReceived))
        assert heads and heads[0].stream_id == sid
        assert dict(heads[0].headers or [])[b":status"] == b"200"
        assert body == b"queue"
    finally:
        await client.close()


async def test_a_calls_grpc_timeout_is_its_deadline_within_the_revisions(rig: QpRig) -> None:
    # The app never answers; the revision timeout is 300 s. A call saying grpc-timeout:
    # 300m gets the queue-proxy's 504 at its own deadline; one without keeps waiting.
    release = asyncio.Event()

    async def hold(ex: Exchange) -> None:
        await release.wait()
        ex.send(200, b"late")

    app = HttpServer(hold)
    await app.start("127.0.0.1", 0)
    qp = await rig.start(app.port)
    client = await RawH2.connect(qp.main.port)
    try:
        grpc = [("content-type", "application/grpc"), ("te", "trailers")]
        timed = client.request("/svc/Call", extra=[*grpc, ("grpc-timeout", "300m")])
        untimed = client.request("/svc/Call", extra=grpc)
        await client.flush()
        events = await client.until(h2.events.StreamEnded, timeout=5)
        heads = {
            e.stream_id: dict(e.headers or [])[b":status"]
            for e in events
            if isinstance(e, h2.events.ResponseReceived)
        }
        assert heads == {timed: b"504"}  # and nothing yet for the call without a deadline
        assert untimed not in heads
    finally:
        release.set()
        await client.close()
        await app.shutdown(1)
