"""The revision timeouts, v1.23.0 env. The pair runs with
``REVISION_TIMEOUT_SECONDS=2``, ``REVISION_RESPONSE_START_TIMEOUT_SECONDS=1`` and
``REVISION_IDLE_TIMEOUT_SECONDS=1``; cases compare statuses and the bytes that arrived, with
scripted delays at least 0.4 s away from every limit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.client import build, exchange, get
from tests.conformance.compare import on_both, same
from tests.conformance.peers import V123, Pair, Sidecar, running_pair

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair(
        V123,
        tmp_path_factory.mktemp("timeouts"),
        REVISION_TIMEOUT_SECONDS="2",
        REVISION_RESPONSE_START_TIMEOUT_SECONDS="1",
        REVISION_IDLE_TIMEOUT_SECONDS="1",
    ) as p:
        yield p


def test_within_every_timeout(timeouts: Pair) -> None:
    assert same(timeouts, lambda s: get(s.port, "/sleep/400").comparable())[0] == 200


def without_nosniff(answer: tuple[int, list[tuple[str, str]], bytes]) -> object:
    status, heads, body = answer
    return status, [kv for kv in heads if kv[0] != "x-content-type-options"], body


def test_response_start_timeout_is_504(timeouts: Pair) -> None:
    # X-Content-Type-Options is left out here: see the xfail case below.
    resp = same(timeouts, lambda s: without_nosniff(get(s.port, "/sleep/1600").comparable()))
    assert resp == (
        504,
        [("connection", "close"), ("content-length", "15"),
         ("content-type", "text/plain; charset=utf-8")],
        b"request timeout",
    )  # fmt: skip


@pytest.mark.xfail(
    strict=True,
    reason="known mismatch, not fixed (outside this task's files): Go's timeout handler "
    "writes the 504 body itself, without X-Content-Type-Options: nosniff; Sluice's 504 goes "
    "through Exchange.fail (proxy/http1.py), which adds it to every text/plain error",
)
def test_timeout_504_has_no_nosniff(timeouts: Pair) -> None:
    same(timeouts, lambda s: get(s.port, "/sleep/1600").comparable())


def stream_received(s: Sidecar, path: str) -> tuple[bytes, bool]:
    """The response bytes that arrived (head dropped) and whether the chunked body ended."""
    data = exchange(s.port, build(path), timeout=10)
    _, _, body = data.partition(b"\r\n\r\n")
    pieces = b"".join(line + b"\n" for line in body.split(b"\n") if line.startswith(b"piece"))
    return pieces, body.endswith(b"0\r\n\r\n")


# Deliberate difference for the two cut streams below: once the response has started, Go's
# timeout handler just stops, and Go's server then ends the chunked body with its last chunk,
# so the client receives a truncated body that looks complete. Sluice closes the connection
# without the last chunk (proxy/dataplane/deadline.py), so the client can tell the body is cut
# (RFC 9112 section 8: an incomplete message must not be presented as complete). The pieces
# that arrive are the same; only the terminating chunk differs.


def test_idle_timeout_cuts_a_stalled_stream(timeouts: Pair) -> None:
    go, sluice = on_both(timeouts, lambda s: stream_received(s, "/stream/3/1600"))
    assert go == (b"piece 0\n", True) and sluice == (b"piece 0\n", False)


def test_revision_timeout_cuts_a_long_stream(timeouts: Pair) -> None:
    # Pieces at 0, 0.6, 1.2 and 1.8 s fit in the 2 s budget; the one at 2.4 s does not.
    go, sluice = on_both(timeouts, lambda s: stream_received(s, "/stream/6/600"))
    four = b"".join(b"piece %d\n" % i for i in range(4))
    assert go == (four, True) and sluice == (four, False)


def test_a_stream_within_the_timeouts_completes(timeouts: Pair) -> None:
    pieces, complete = same(timeouts, lambda s: stream_received(s, "/stream/3/400"))
    assert pieces.count(b"piece") == 3 and complete


def test_timed_out_request_leaves_the_app_connection_usable(timeouts: Pair) -> None:
    def script(s: Sidecar) -> tuple[int, int]:
        first = get(s.port, "/sleep/1600").status
        return first, get(s.port, "/status/200").status

    assert same(timeouts, script) == (504, 200)
