"""A seconds-long run of ``bench.kube_apply``: it starts, feeds events and reports figures."""

from __future__ import annotations

import pytest

from bench.kube_apply import main, measure

pytestmark = pytest.mark.timeout(60)


async def test_measure_applies_events_and_reports_cost_and_memory() -> None:
    us, events, rss0, rss1 = await measure(5, 0.3)
    assert events > 0 and us > 0
    assert 0 < rss0 <= rss1 + 50  # figures in MiB, taken from /proc


def test_bad_arguments_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--revisions", "0"]) == 1
    assert capsys.readouterr().err.strip().startswith("kube_apply: --revisions")
