"""bench.instructions: its in-process driver serves real requests and keeps the hot-path rules."""

from __future__ import annotations

import pytest

from bench import instructions


@pytest.mark.parametrize("target", instructions.TARGETS)
async def test_driver_answers_every_request_and_leaves_no_cycles(target: str) -> None:
    # check() raises if any answer is not a 200 from the canned upstream, and lists the
    # request objects left in reference cycles (each would wait for the cyclic collector).
    assert await instructions.check(target, requests=200) == []


async def test_driver_serves_the_requested_count() -> None:
    await instructions.drive("queue-proxy-queued", 10)


def test_unknown_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        instructions.main(["--check", "nginx"])
    assert stop.value.code == 2
    assert "unknown target 'nginx'" in capsys.readouterr().err
