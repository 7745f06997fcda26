"""Statistical helpers against reference values (scipy is a test-only dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyze.stats import benjamini_hochberg, spearman, wilson_interval

scipy_stats = pytest.importorskip("scipy.stats")


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=10)])
    ours = benjamini_hochberg(p)
    reference = scipy_stats.false_discovery_control(p, method="bh")
    assert np.allclose(ours, reference, atol=1e-12)
    with_nan = benjamini_hochberg([0.01, np.nan, 0.04])
    assert np.isnan(with_nan[1]) and with_nan[0] == pytest.approx(0.02)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (37, 64), (1, 1000)])
def test_wilson_interval_matches_reference(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    result = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert low == pytest.approx(result.low, abs=1e-7)
    assert high == pytest.approx(result.high, abs=1e-7)


def test_spearman_matches_scipy_with_ties() -> None:
    x = [0.1, 0.2, 0.2, 0.4, 0.9, 0.5]
    y = [1.0, 3.0, 2.0, 2.0, 7.0, 5.0]
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
