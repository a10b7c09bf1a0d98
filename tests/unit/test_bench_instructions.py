"""bench.instructions: its in-process driver serves real requests and keeps the hot-path rules."""

from __future__ import annotations

import pytest

from bench import instructions


@pytest.mark.parametrize("target", instructions.TARGETS)
async def test_driver_answers_every_request_and_leaves_no_cycles(target: str) -> None:
    # check() raises if any answer is not a 200 from the canned upstream (over HTTP/2: on
    # its own stream, read back with the h2 library), and lists the request objects left
    # in reference cycles (each would wait for the cyclic collector).
    left = await instructions.check(target, requests=200)
    assert left == []


async def test_h2_driver_feeds_hpack_blocks_as_h2load_does() -> None:
    requests, responses = instructions._h2_feeds(0, 3)
    # The first blocks add fields to the dynamic table; the later ones are shorter and
    # identical apart from the stream id (9 bytes of frame head, the id last).
    assert len(requests[1]) < len(requests[0]) and len(responses[1]) < len(responses[0])
    assert requests[1][9:] == requests[2][9:] and requests[2][5:9] == b"\0\0\0\5"
    assert responses[2].endswith(b"\0\0\0\5" + instructions.BODY)


async def test_driver_serves_the_requested_count() -> None:
    await instructions.drive("queue-proxy-queued", 10)


def test_unknown_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        instructions.main(["--check", "nginx"])
    assert stop.value.code == 2
    assert "unknown target 'nginx'" in capsys.readouterr().err
