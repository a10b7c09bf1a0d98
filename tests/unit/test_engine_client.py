"""The upstream side with a fake transport: response parsing, reuse decisions, the pool."""

from __future__ import annotations

import asyncio

import pytest

from proxy.client import UpstreamClosed, UpstreamConnection
from proxy.errors import BadGateway
from proxy.headers import HeaderList
from proxy.pool import UpstreamPool
from tests.unit.engine_fakes import FakeTransport

KEY = ("10.0.0.1", 80)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.heads: list[HeaderList] = []

    def on_informational(self, status: int, headers: HeaderList) -> None:
        self.events.append(("info", status))
        self.heads.append(headers)

    def on_head(self, status: int, headers: HeaderList, content_length: int | None) -> None:
        self.events.append(("head", status, content_length))
        self.heads.append(headers)

    def on_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_upgrade(self, headers: HeaderList, upgrade: bytes, rest: bytes) -> None:
        self.events.append(("upgrade", upgrade, rest))
        self.heads.append(headers)

    def on_trailers(self, headers: HeaderList) -> None:
        self.events.append(("trailers", headers))

    def flush(self) -> None:
        pass


class Outcome:
    """An exchange's outcome callback, read like the future it replaces in these tests."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []

    def __call__(self, error: BaseException | None) -> None:
        self.calls.append(error)

    def done(self) -> bool:
        return bool(self.calls)

    def exception(self) -> BaseException | None:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


#: The outcome of each connection's latest exchange (``begin_with``).
OUTCOMES: dict[UpstreamConnection, Outcome] = {}


def begin_with(conn: UpstreamConnection, sink: Sink, head: bool) -> None:
    OUTCOMES[conn] = Outcome()
    conn.begin(sink, head, OUTCOMES[conn])


def done(conn: UpstreamConnection) -> Outcome:
    return OUTCOMES[conn]


def connect(pool: UpstreamPool | None = None) -> tuple[UpstreamConnection, FakeTransport]:
    conn = UpstreamConnection(pool, KEY, asyncio.get_running_loop())
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    return conn, transport


async def exchange(
    response: bytes | list[bytes], *, head: bool = False
) -> tuple[UpstreamConnection, FakeTransport, Sink]:
    conn, transport = connect()
    sink = Sink()
    begin_with(conn, sink, head)
    for part in [response] if isinstance(response, bytes) else response:
        conn.data_received(part)
    return conn, transport, sink


async def test_complete_response_makes_the_connection_reusable() -> None:
    conn, _, sink = await exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert done(conn).done() and done(conn).exception() is None
    assert conn.reusable
    assert sink.events == [("head", 200, 2), ("body", b"hi")]


async def test_connection_close_response_is_not_reusable() -> None:
    conn, _, _ = await exchange(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert done(conn).done() and not conn.reusable


async def test_http10_response_without_keep_alive_is_not_reusable() -> None:
    conn, _, _ = await exchange(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert done(conn).done() and not conn.reusable


async def test_head_response_with_length_completes_without_a_body() -> None:
    conn, _, sink = await exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", head=True)
    assert done(conn).done() and conn.reusable
    assert sink.events == [("head", 200, 99)]
    # the same connection parses the next response from scratch
    sink2 = Sink()
    begin_with(conn, sink2, False)
    conn.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert done(conn).done() and conn.reusable
    assert sink2.events == [("head", 204, None)]


async def test_interim_responses_precede_the_final_one() -> None:
    conn, _, sink = await exchange(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early",
            b" Hints\r\nLink: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
        ]
    )
    assert sink.events == [("info", 100), ("info", 103), ("head", 200, 1), ("body", b"z")]
    assert conn.reusable


async def test_chunked_response_reports_no_length() -> None:
    conn, _, sink = await exchange(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert sink.events == [("head", 200, None), ("body", b"abc")]
    assert conn.reusable


async def test_close_delimited_response_completes_on_close_and_is_not_reused() -> None:
    conn, _, sink = await exchange(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert not done(conn).done()
    conn.connection_lost(None)
    assert done(conn).exception() is None
    assert not conn.reusable
    assert sink.events == [("head", 200, None), ("body", b"some")]


async def test_truncated_response_fails_the_exchange() -> None:
    conn, _, _ = await exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    conn.connection_lost(None)
    error = done(conn).exception()
    assert isinstance(error, UpstreamClosed) and "truncated" in str(error)
    assert conn.got_head


async def test_close_before_any_response_names_the_cause() -> None:
    conn, _, _ = await exchange([])
    conn.connection_lost(ConnectionResetError("reset by peer"))
    error = done(conn).exception()
    assert isinstance(error, UpstreamClosed)
    assert str(error) == "upstream closed the connection: reset by peer"
    assert not conn.got_head


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["status", "two-cl", "huge-header", "bad-chunk"],
)
async def test_malformed_response_is_bad_gateway_and_aborts(raw: bytes) -> None:
    conn, transport, _ = await exchange(raw)
    assert isinstance(done(conn).exception(), BadGateway)
    assert transport.aborted and conn.closed and not conn.reusable


async def test_bytes_on_an_idle_connection_close_it() -> None:
    conn, transport, _ = await exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conn._sink = None
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed and not conn.reusable


async def test_101_to_an_upgrade_switches_to_a_tunnel() -> None:
    conn, _ = connect()

    class Tunnel(Sink):
        def on_upgrade(self, headers: HeaderList, upgrade: bytes, rest: bytes) -> None:
            self.events.append(("upgrade", upgrade, rest))
            self.heads.append(headers)
            conn.enter_tunnel(self, lambda: self.events.append(("closed",)))

    tunnel = Tunnel()
    begin_with(conn, tunnel, False)
    conn.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: k\r\n\r\nframe"
    )
    assert done(conn).exception() is None
    conn.data_received(b"more")
    conn.connection_lost(None)
    assert tunnel.events == [("upgrade", b"websocket", b"frame"), ("body", b"more"), ("closed",)]
    assert tunnel.heads == [[(b"Sec-WebSocket-Accept", b"k")]]
    assert not conn.reusable


async def test_101_the_sink_refuses_is_bad_gateway() -> None:
    conn, transport, sink = await exchange(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert sink.events == [("upgrade", b"websocket", b"")]
    assert isinstance(done(conn).exception(), BadGateway)
    assert transport.aborted


async def test_101_without_connection_upgrade_is_bad_gateway() -> None:
    conn, transport, sink = await exchange(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nraw"
    )
    assert sink.events == []
    assert isinstance(done(conn).exception(), BadGateway)
    assert transport.aborted


# ------------------------------------------------------------------------------- the pool


async def pooled(pool: UpstreamPool, key: tuple[str, int] = KEY) -> UpstreamConnection:
    conn = UpstreamConnection(pool, key, asyncio.get_running_loop())
    conn.connection_made(FakeTransport(conn))
    conn.reusable = True
    return conn


async def test_pool_reuses_the_most_recent_idle_connection() -> None:
    pool = UpstreamPool()
    a, b = await pooled(pool), await pooled(pool)
    pool.release(a)
    pool.release(b)
    assert pool.idle_count(*KEY) == 2
    assert pool.take_idle(*KEY) is b
    assert pool.take_idle(*KEY) is a
    assert pool.take_idle(*KEY) is None
    assert repr(pool) == "UpstreamPool(hosts=1, idle=0)"


async def test_pool_closes_what_it_cannot_reuse() -> None:
    pool = UpstreamPool(max_idle_per_host=1)
    a, b, c = await pooled(pool), await pooled(pool), await pooled(pool)
    c.reusable = False
    pool.release(a)
    pool.release(b)  # over the per-host cap
    pool.release(c)  # not reusable
    assert pool.idle_count(*KEY) == 1
    assert not a.closed and b.closed and c.closed


async def test_pool_drops_connections_idle_past_the_timeout() -> None:
    pool = UpstreamPool(idle_timeout=0.001)
    a = await pooled(pool)
    pool.release(a)
    a.idle_since -= 1
    assert pool.take_idle(*KEY) is None
    assert a.closed


async def test_pool_forgets_a_connection_the_upstream_closed() -> None:
    pool = UpstreamPool()
    a = await pooled(pool)
    pool.release(a)
    a.connection_lost(None)
    assert pool.idle_count(*KEY) == 0


async def test_pool_resumes_reading_on_a_connection_paused_at_the_end_of_a_response() -> None:
    pool = UpstreamPool()
    conn = UpstreamConnection(pool, KEY, asyncio.get_running_loop())
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    sink = Sink()
    begin_with(conn, sink, False)
    conn.pause_reading()  # a slow client paused it during the last body bytes
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert conn.reusable and not transport.reading
    pool.release(conn)
    assert transport.reading
    assert pool.take_idle(*KEY) is conn


async def test_pool_close_closes_idle_connections_and_refuses_new_ones() -> None:
    pool = UpstreamPool()
    a, b = await pooled(pool), await pooled(pool)
    pool.release(a)
    pool.close()
    assert a.closed
    pool.release(b)
    assert b.closed and pool.idle_count(*KEY) == 0


def test_pool_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="max_idle_per_host"):
        UpstreamPool(max_idle_per_host=-1)


async def test_endless_response_header_line_is_bad_gateway_not_buffered() -> None:
    conn, transport, sink = await exchange(
        [b"HTTP/1.1 200 OK\r\nX-Endless: "] + [b"v" * 30_000] * 5
    )
    error = done(conn).exception()
    assert isinstance(error, BadGateway) and "too large" in str(error)
    assert transport.aborted and sink.events == []


async def test_head_split_over_many_reads_within_the_cap_is_fine() -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 1000 + b"Content-Length: 1\r\n\r\nz"
    conn, _, sink = await exchange([raw[i : i + 100] for i in range(0, len(raw), 100)])
    assert done(conn).exception() is None
    assert sink.events[-1] == ("body", b"z")


@pytest.mark.parametrize("reads", [1, 40], ids=["one-read", "many-reads"])
async def test_response_head_over_the_limit_is_bad_gateway(reads: int) -> None:
    fields = b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 100) for i in range(700))  # ~78 KB
    raw = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 1\r\n\r\nz"
    size = -(-len(raw) // reads)
    conn, transport, sink = await exchange([raw[i : i + size] for i in range(0, len(raw), size)])
    error = done(conn).exception()
    assert isinstance(error, BadGateway) and "too large" in str(error)
    assert transport.aborted and sink.events == []


async def test_response_head_just_under_the_limit_in_one_read_is_fine() -> None:
    fields = b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 100) for i in range(550))  # ~61 KB
    conn, _, sink = await exchange(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 1\r\n\r\nz")
    assert done(conn).exception() is None
    assert sink.events == [("head", 200, 1), ("body", b"z")]


async def test_response_trailers_are_dropped_and_bounded() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"
    conn, _, sink = await exchange(head + b"X-Checksum: abc\r\n\r\n")
    assert done(conn).exception() is None and conn.reusable
    assert sink.events == [("head", 200, None), ("body", b"hi")]
    trailers = b"".join(b"X-T%05d: %s\r\n" % (i, b"v" * 100) for i in range(700))
    conn, transport, _ = await exchange([head, trailers[:40_000], trailers[40_000:], b"\r\n"])
    error = done(conn).exception()
    assert isinstance(error, BadGateway) and "trailers too large" in str(error)
    assert transport.aborted


@pytest.mark.parametrize("connection", [b"close", b"keep-alive", b"close, X-Secret"])
async def test_sinks_get_only_end_to_end_headers_in_order_and_case(connection: bytes) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: %s\r\n"
        b"X-Secret: s\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\n"
        b"Proxy-Authenticate: Basic\r\nTrailer: X\r\nUpgrade: h2c\r\n"
        b"Set-Cookie: a=1\r\nset-cookie: b=2\r\n\r\nabc"
    ) % connection
    conn, _, sink = await exchange(raw)
    expected = [(b"Content-Type", b"text/plain"), (b"X-Secret", b"s")]
    expected += [(b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")]
    if b"X-Secret" in connection:
        del expected[1]  # named by Connection: hop-by-hop for this response
    assert sink.heads == [expected]
    assert sink.events[0] == ("head", 200, 3)
    assert conn.reusable == (b"close" not in connection)


async def test_interim_response_headers_are_filtered_too() -> None:
    _, _, sink = await exchange(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: keep-alive\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nServer: up\r\n\r\n"
    )
    assert sink.heads == [[(b"Link", b"</a.css>")], [(b"Server", b"up")]]


async def test_head_answer_with_connection_close_is_not_reused() -> None:
    conn, _, _ = await exchange(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n", head=True
    )
    assert done(conn).done() and not conn.reusable


# ------------------------------------------ the callback path: outcome after llhttp returns


class ReusingOwner:
    """An owner that, told its response is complete, starts the next request on the same
    connection at once (as a queued request granted from ``on_done`` does)."""

    def __init__(self, conn: UpstreamConnection, pool: UpstreamPool) -> None:
        self.conn = conn
        self.pool = pool
        self.outcomes: list[BaseException | None] = []
        self.sinks = [Sink(), Sink()]

    def first_done(self, error: BaseException | None) -> None:
        self.outcomes.append(error)
        self.pool.release(self.conn)
        again = self.pool.take_idle(*KEY)
        assert again is self.conn  # handed straight back: the next request reuses it
        again.begin(self.sinks[1], False, self.outcomes.append)
        again.write(b"GET /second HTTP/1.1\r\n\r\n")


async def test_callback_outcome_comes_after_llhttp_returned_so_the_owner_may_reuse() -> None:
    pool = UpstreamPool()
    conn, transport = connect(pool)
    owner = ReusingOwner(conn, pool)
    conn.begin(owner.sinks[0], False, owner.first_done)
    body = b"x" * 50000
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + body)
    assert owner.outcomes == [None]
    assert transport.data.endswith(b"GET /second HTTP/1.1\r\n\r\n")
    # The second head is bounded on its own: the first response's read does not count.
    conn.data_received(b"HTTP/1.1 200 OK\r\nX-Big: " + b"y" * 20000)
    conn.data_received(b"\r\nContent-Length: 3\r\n\r\nyes")
    assert owner.outcomes == [None, None]
    assert owner.sinks[1].events == [("head", 200, 3), ("body", b"yes")]
    assert conn.reusable and not transport.closed


async def test_head_answer_on_the_callback_path_reports_once_after_the_read() -> None:
    conn, _ = connect()
    outcomes: list[BaseException | None] = []
    conn.begin(Sink(), True, outcomes.append)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert outcomes == [None] and conn.reusable


async def test_a_101_right_after_a_whole_response_fails_the_connection_not_the_exchange() -> None:
    conn, transport = connect()
    outcomes: list[BaseException | None] = []
    sink = Sink()
    conn.begin(sink, False, outcomes.append)
    conn.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
    )
    assert outcomes == [None]  # the exchange got its whole answer
    assert sink.events == [("head", 200, 2), ("body", b"hi")]
    assert transport.aborted and not conn.reusable
