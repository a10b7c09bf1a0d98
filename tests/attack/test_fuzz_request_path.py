"""A differential fuzzer of the request path against h11, a strict reference parser.

Every byte stream goes to Sluice's ``HttpServerProtocol`` (over a fake transport, split into
packets at drawn points) and to an h11 server connection. The property: every request
Sluice hands to its handler with a complete body is one h11 also reads, in the same place on
the connection, with the same method, target and body. Sluice may refuse more than h11 (it
is deliberately stricter: ``tests/conformance/test_framing_v123.py``), never accept a
request h11 does not see: that is the shape of request smuggling, two parsers reading one
stream two ways. Sluice also never answers 500 (a crash) to any input.

The seeds are ``tests.attack.corpus``, each one run as an explicit example every time. The
default suite draws a bounded number of examples, derandomised so CI is repeatable;
``SLUICE_FUZZ_EXAMPLES=20000`` draws that many, randomly, on demand.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.errors import ProxyError
from proxy.headrules import split_absolute
from proxy.http1 import Exchange
from tests.attack.corpus import CORPUS
from tests.unit.engine_fakes import make_protocol, responses, settle

_ON_DEMAND = os.environ.get("SLUICE_FUZZ_EXAMPLES")
EXAMPLES = int(_ON_DEMAND or "150")

#: A request as both sides report it: method, target (origin form), body.
Seen = tuple[bytes, bytes, bytes]


# ------------------------------------------------------------------------- the two sides


def h11_requests(data: bytes) -> list[Seen]:
    """The complete requests h11 reads from ``data``, in order, answering each one."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    conn.receive_data(data)
    out: list[Seen] = []
    method = target = b""
    body = bytearray()
    keep_alive_10 = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return out
        if event is h11.NEED_DATA or event is h11.PAUSED:
            if conn.our_state is h11.SEND_RESPONSE:
                _answer(conn)
                continue
            return out
        if isinstance(event, h11.Request):
            method, target, body = event.method, event.target, bytearray()
            keep_alive_10 = event.http_version == b"1.0" and any(
                name == b"connection" and b"keep-alive" in value.lower()
                for name, value in event.headers
            )
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((method, _origin(target), bytes(body)))
            if conn.our_state is h11.SEND_RESPONSE:
                _answer(conn)
            if keep_alive_10 and conn.our_state is h11.MUST_CLOSE:
                # h11 has no HTTP/1.0 keep-alive (RFC 9112 appendix C.2.2 lets it be):
                # read on from a fresh connection, as Sluice keeps this one.
                rest, _ = conn.trailing_data
                return out + h11_requests(bytes(rest))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return out
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return out


def _answer(conn: h11.Connection) -> None:
    # Not a 2xx: a 2xx to CONNECT (or a 101) would switch protocols; h11 reads no further.
    conn.send(h11.Response(status_code=404, headers=[(b"Content-Length", b"0")]))
    conn.send(h11.EndOfMessage())


def _origin(target: bytes) -> bytes:
    """Sluice turns an absolute-form target into origin form; so is h11's compared."""
    try:
        split = split_absolute(target)
    except ProxyError:
        return target
    return split[0] if split is not None else target


@dataclass
class SluiceResult:
    requests: list[Seen]
    statuses: list[int]


async def sluice_requests(packets: list[bytes]) -> SluiceResult:
    """The requests Sluice's handler got with a whole body, and the statuses it wrote."""
    seen: list[Seen] = []

    async def handler(ex: Exchange) -> None:
        body = bytearray()
        while chunk := await ex.read_body():
            body += chunk
        seen.append((ex.method, ex.target, bytes(body)))
        ex.send(200)

    proto, transport = make_protocol(handler)
    for packet in packets:
        if transport.closed:
            break
        proto.data_received(packet)
        await settle(proto, 5)
    await settle(proto)
    if not transport.closed:
        proto.connection_lost(None)  # the end of the stream: stop whatever still waits
        await settle(proto, 5)
    return SluiceResult(seen, [status for status, _ in responses(transport.data)])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]


# ---------------------------------------------------------------------------- strategies

_METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"DELETE", b"G(T", b"CONNECT"]
_TARGETS = [b"/", b"/x?y=1", b"*", b"http://a.example/p", b"/%00", b"x", b"/a b"]
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b""]
_NAMES = [
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade",
    b"X-A", b"Transfer-Encoding ", b"Content-Length\t", b"X_B", b"", b"Trailer",
]  # fmt: skip
_VALUES = [
    b"h", b"0", b"3", b"5", b"-1", b"+3", b"3, 3", b"0x3", b"chunked", b"gzip, chunked",
    b"chunked, gzip", b" chunked", b"chunked\x0b", b"identity", b"close", b"keep-alive",
    b"Upgrade", b"h2c", b"100-continue", b"a\x00b", b"a\rb", b"", b"h ", b"a/b",
]  # fmt: skip
_SEPARATORS = [b": ", b":", b":\t", b" : ", b":  "]
_EOLS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]
_BODIES = [
    b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n", b"5;e=1\r\nhello\r\n0\r\n\r\n",
    b"0\r\nX-T: 1\r\n\r\n", b"3\r\nabcde\r\n0\r\n\r\n", b"ffffffffffffffffff\r\n",
]  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One to three requests built from smuggling-prone parts, back to back."""
    out = bytearray()
    for _ in range(draw(st.integers(1, 3))):
        eol = draw(st.sampled_from(_EOLS))
        line = b" ".join(
            p
            for p in (
                draw(st.sampled_from(_METHODS)),
                draw(st.sampled_from(_TARGETS)),
                draw(st.sampled_from(_VERSIONS)),
            )
            if p
        )
        out += line + eol
        for name, sep, value in draw(
            st.lists(
                st.tuples(
                    st.sampled_from(_NAMES), st.sampled_from(_SEPARATORS), st.sampled_from(_VALUES)
                ),
                max_size=5,
            )
        ):
            out += name + sep + value + draw(st.sampled_from(_EOLS))
        out += eol + draw(st.sampled_from(_BODIES))
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus stream with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(list(CORPUS.values()))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["put", "insert", "delete"]))
        byte = draw(st.sampled_from(b"\r\n :;,\t\x00\x0b0-9aXZ\x7f"))
        if op == "insert" or at == len(data):
            data[at:at] = bytes([byte])
        elif op == "put":
            data[at] = byte
        else:
            del data[at]
    return bytes(data)


streams = st.one_of(requests(), mutated(), st.sampled_from(list(CORPUS.values())))
cuts = st.lists(st.integers(0, 10_000), max_size=4)


# ----------------------------------------------------------------------------- property


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def check(loop: asyncio.AbstractEventLoop, data: bytes, cut: list[int]) -> None:
    sluice = loop.run_until_complete(sluice_requests(split(data, cut)))
    reference = h11_requests(data)
    assert 500 not in sluice.statuses, f"Sluice failed on {data!r}"
    n = len(sluice.requests)
    assert sluice.requests == reference[:n], (
        f"Sluice read requests h11 does not:\n  stream {data!r}\n  Sluice {sluice.requests}"
        f"\n  h11    {reference}"
    )


def _with_corpus(test: Callable[..., None]) -> Callable[..., None]:
    for name in sorted(CORPUS):
        test = example(data=CORPUS[name], cut=[])(test)
    return test


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=_ON_DEMAND is None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=streams, cut=cuts)
@_with_corpus
def test_sluice_never_reads_a_request_h11_does_not(
    loop: asyncio.AbstractEventLoop, data: bytes, cut: list[int]
) -> None:
    check(loop, data, cut)


def test_the_oracle_catches_a_request_only_sluice_reads(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The property has teeth: were h11 to read one request where Sluice reads three (as a
    front end that saw a body where Sluice saw requests), the check fails."""
    data = CORPUS["pipeline-3"]
    monkeypatch.setattr(
        __import__(__name__, fromlist=["_"]), "h11_requests", lambda raw: [(b"GET", b"/a", b"")]
    )
    with pytest.raises(AssertionError, match="Sluice read requests h11 does not"):
        check(loop, data, [])
