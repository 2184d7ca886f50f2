"""Length metrics on hand-worked numbers, and the rank correlations against scipy on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from blockctl.tagger.metrics import kendall_tau_b, length_metrics, spearman


def test_hand_worked_errors() -> None:
    m = length_metrics([10, 20, 30, 40], [12, 18, 35, 100])
    # |errors| = 2, 2, 5, 60
    assert m.n == 4
    assert m.mae == pytest.approx(17.25)
    assert m.mape == pytest.approx((2 / 12 + 2 / 18 + 5 / 35 + 60 / 100) / 4 * 100)
    assert m.median_ae == pytest.approx(3.5)
    assert m.acc50 == pytest.approx(0.75)
    assert m.acc100 == pytest.approx(1.0)
    assert m.kendall_tau == pytest.approx(1.0)  # same order
    assert m.spearman_rho == pytest.approx(1.0)


def test_rank_correlations_by_hand() -> None:
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # pairs: (1,1)-(…) tied in x; the two others concordant → 2 / sqrt((3 - 1) * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    # ranks [1.5, 1.5, 3] vs [1, 2, 3]: centred [-0.5, -0.5, 1] · [-1, 0, 1] = 1.5; norms sqrt(1.5), sqrt(2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(1.5 * 2))
    assert math.isnan(kendall_tau_b([5, 5, 5], [1, 2, 3]))  # constant predictions have no ranking


def test_rank_correlations_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 40, 3000).astype(float)  # many ties, and more than one block of pairs
    b = a + rng.normal(0, 15, 3000).round()
    assert kendall_tau_b(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-9)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-9)


def test_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        length_metrics([1, 2], [1])
