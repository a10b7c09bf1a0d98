"""The shared request-timeout policy (proxy/dataplane/deadline.py): when each timeout expires,
what the client then gets, and the sweeper's life cycle."""

from __future__ import annotations

import asyncio

import pytest

from proxy.dataplane import deadline
from proxy.dataplane.deadline import SWEEP_INTERVAL, Deadline
from proxy.http1 import Exchange
from tests.unit.engine_fakes import make_protocol, responses

pytestmark = pytest.mark.timeout(10)

REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


class Parked:
    """A handler that never answers by itself: the deadline has to."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []
        self.cancelled = 0

    async def __call__(self, ex: Exchange) -> None:
        self.seen.append(ex)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def parked_exchange() -> tuple[Exchange, Parked, bytearray]:
    handler = Parked()
    proto, transport = make_protocol(handler)
    proto.data_received(REQUEST)
    await asyncio.sleep(0)
    return handler.seen[0], handler, transport.buffer


async def test_total_expires_from_the_parsed_head_whatever_was_written() -> None:
    ex, _, _ = await parked_exchange()
    d = Deadline(10.0)
    t0 = ex.started_at
    assert not d.expired(ex, t0 + 9.9)
    assert d.expired(ex, t0 + 10.0)
    ex.start_response(200, [], None)
    assert d.expired(ex, t0 + 10.0)  # a hard maximum, even once answering


async def test_response_start_stops_counting_once_the_head_went_out() -> None:
    ex, _, _ = await parked_exchange()
    d = Deadline(0.0, response_start=2.0)
    t0 = ex.started_at
    assert not d.expired(ex, t0 + 1.9)
    assert d.expired(ex, t0 + 2.0)
    ex.start_response(200, [], None)
    assert not d.expired(ex, t0 + 50.0)


async def test_idle_counts_from_the_last_write_and_first_from_the_start() -> None:
    ex, _, _ = await parked_exchange()
    d = Deadline(0.0, idle=1.0)
    t0 = ex.started_at
    assert d.expired(ex, t0 + 1.0)
    ex.last_write = t0 + 5.0
    assert not d.expired(ex, t0 + 5.9)
    assert d.expired(ex, t0 + 6.0)


async def test_no_timeout_set_watches_nothing() -> None:
    ex, _, _ = await parked_exchange()
    d = Deadline(0.0)
    assert not d.armed
    d.watch(ex)
    assert not d.live
    assert not d.expired(ex, ex.started_at + 1e9)


async def test_expiry_before_the_response_answers_504_with_the_message_and_cancels() -> None:
    ex, handler, out = await parked_exchange()
    d = Deadline(0.05, message="activator request timeout")
    d.watch(ex)
    async with asyncio.timeout(3):
        while not handler.cancelled:
            await asyncio.sleep(SWEEP_INTERVAL / 4)
    assert responses(bytes(out))[0][0] == 504
    assert bytes(out).endswith(b"activator request timeout")
    assert not d.live


async def test_expiry_after_the_response_started_cuts_the_connection() -> None:
    ex, handler, _ = await parked_exchange()
    ex.start_response(200, [], 100)
    ex.write(b"partial")
    d = Deadline(0.0, idle=0.05)
    d.watch(ex)
    async with asyncio.timeout(3):
        while not handler.cancelled:
            await asyncio.sleep(SWEEP_INTERVAL / 4)
    assert ex.response_done and not ex.keep_alive  # cut, never completed as if whole


async def test_forgotten_exchange_is_never_expired() -> None:
    ex, handler, out = await parked_exchange()
    d = Deadline(0.05)
    d.watch(ex)
    d.forget(ex)
    d.forget(ex)  # twice is harmless
    await asyncio.sleep(SWEEP_INTERVAL * 2 + 0.1)
    assert handler.cancelled == 0 and not out


async def test_the_sweeper_stops_when_idle_and_a_later_watch_restarts_it() -> None:
    first, h1, _ = await parked_exchange()
    d = Deadline(0.05)
    d.watch(first)
    d.forget(first)
    await asyncio.sleep(SWEEP_INTERVAL * 3)  # an empty sweep lets the policy go
    assert not deadline._sweeper(asyncio.get_running_loop()).running
    second, h2, out = await parked_exchange()
    d.watch(second)
    async with asyncio.timeout(3):
        while not h2.cancelled:
            await asyncio.sleep(SWEEP_INTERVAL / 4)
    assert responses(bytes(out))[0][0] == 504
    assert h1.cancelled == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1S", 1.0), (b"300m", 0.3), (b"2M", 120.0), (b"1H", 3600.0), (b"5000u", 0.005),
     (b"100n", 1e-7), (b"99999999m", 99999.999)],
)  # fmt: skip
def test_grpc_timeout_values(value: bytes, seconds: float) -> None:
    from proxy.dataplane.deadline import grpc_timeout

    assert grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"1", b"1s", b"-1S", b"123456789S", b"1.5S"])
def test_malformed_grpc_timeouts_are_ignored(value: bytes) -> None:
    from proxy.dataplane.deadline import grpc_timeout

    assert grpc_timeout(value) is None
    policy = Deadline(300)
    assert policy.for_grpc(value) is policy


def test_a_grpc_deadline_narrows_the_total_never_widens_it() -> None:
    policy = Deadline(10, response_start=2, message="m")
    short = policy.for_grpc(b"500m")
    assert (short.total, short.response_start, short.message) == (0.5, 2, "m")
    assert policy.for_grpc(b"500m") is short  # one policy per distinct deadline
    assert policy.for_grpc(b"20S") is policy  # the revision's timeout still bounds it
