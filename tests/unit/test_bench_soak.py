"""The soak benchmark's pure parts: the plateau rule and the samples (issue 15, item 8)."""

from __future__ import annotations

import pytest

from bench.soak import Sample, plateau_growth


def samples(rss: list[float], step: float = 10.0) -> list[Sample]:
    return [Sample(i * step, r, 10, 5, 0, 0) for i, r in enumerate(rss)]


def test_growth_is_measured_over_the_last_third_only() -> None:
    # Warm-up growth early on does not count; the last third is flat.
    assert plateau_growth(samples([20, 30, 40, 50, 50, 50, 50, 50, 50, 50])) == 0.0
    assert plateau_growth(samples([20, 20, 20, 20, 20, 20, 20, 21])) == pytest.approx(0.05)


def test_too_few_samples_is_an_error_naming_the_samples() -> None:
    with pytest.raises(ValueError, match="samples"):
        plateau_growth([])
    with pytest.raises(ValueError, match="samples"):
        plateau_growth(samples([1.0]))
