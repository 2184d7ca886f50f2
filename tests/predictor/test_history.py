"""A conversation's earlier reply lengths as evidence for its next one (blockctl.predict.history)."""

from __future__ import annotations

import math
import random

import pytest

from blockctl.errors import TaggerError
from blockctl.predict.history import BINS, ReplyHistory, fit_history, history_score
from blockctl.tagger.metrics import kendall_tau_b as kendall_tau


def _conversations(n: int, seed: int) -> list[list[int]]:
    """Each conversation has its own typical reply length; replies scatter around it (log-normal)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        typical = rng.lognormvariate(5.0, 0.9)
        out.append([max(1, round(typical * rng.lognormvariate(0, 0.5))) for _ in range(rng.randint(1, 6))])
    return out


def test_the_score_is_a_geometric_mean_leaning_on_the_latest_reply() -> None:
    assert history_score([100]) == pytest.approx(100)
    assert history_score([10, 1000]) == pytest.approx(math.exp((math.log(1000) + 0.5 * math.log(10)) / 1.5))
    assert history_score([1000, 10]) < 100 < history_score([10, 1000])
    assert history_score([0, 5]) == pytest.approx(history_score([1, 5]))  # an empty reply counts as one token


def test_bins_rank_next_replies_on_conversations_never_fitted_on() -> None:
    table = fit_history(_conversations(3000, seed=1))
    assert len(table.atoms) == BINS and table.turns > 5000
    medians = [a[len(a) // 2] for a in table.atoms]
    assert medians == sorted(medians) and medians[-1] > 3 * medians[0]
    assert table.dist([]) is None
    means, nexts = [], []
    for replies in _conversations(1500, seed=2):
        for k in range(1, len(replies)):
            d = table.dist(replies[:k])
            assert d is not None and len(d.atoms) > 1
            means.append(d.mean)
            nexts.append(replies[k])
    assert kendall_tau(means, nexts) > 0.4
    # calibrated: about 80 % of held-out next replies fall inside their bin's P10-P90
    inside = 0
    for replies in _conversations(1500, seed=3):
        for k in range(1, len(replies)):
            d = table.dist(replies[:k])
            assert d is not None
            inside += d.quantile(0.1) <= replies[k] <= d.quantile(0.9)
    total = sum(len(r) - 1 for r in _conversations(1500, seed=3))
    assert inside / total == pytest.approx(0.8, abs=0.05)


def test_round_trip_and_bad_tables_are_named() -> None:
    table = fit_history(_conversations(400, seed=4))
    again = ReplyHistory.from_dict(table.as_dict())
    assert again == table and again.dist([50, 80]) == table.dist([50, 80])
    assert ReplyHistory.from_dict({}) is None
    for bad in ({"edges": [1.0]}, {"edges": [2.0, 1.0], "quantiles": [[1], [2], [3]]},
                {"edges": [1.0], "quantiles": [[1], []]}, {"edges": [1.0], "quantiles": [[1], [0]]},
                {"edges": "x", "quantiles": [[1]]}):
        with pytest.raises(TaggerError, match="history"):
            ReplyHistory.from_dict(bad)
    with pytest.raises(TaggerError, match="later conversation turns"):
        fit_history([[5], [6, 7]])  # one later turn, eight bins


def test_equal_scores_share_a_bin() -> None:
    table = fit_history([[100, 50]] * 30 + [[10, 5]] * 30)
    assert len(table.atoms) == 2  # two distinct scores: two bins, whatever BINS asks
    assert table.dist([100]) is not None and table.dist([100]).mean == 50  # type: ignore[union-attr]
    assert table.dist([10]).mean == 5  # type: ignore[union-attr]
