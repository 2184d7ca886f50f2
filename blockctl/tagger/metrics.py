"""Accuracy metrics for predicted response lengths (pure numpy; rank correlations with tie corrections)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class LengthMetrics:
    n: int
    mae: float  # mean |pred - true| in tokens
    mape: float  # mean |pred - true| / true, in percent
    median_ae: float
    acc50: float  # fraction of predictions within ±50 tokens
    acc100: float  # fraction within ±100 tokens
    kendall_tau: float  # tau-b
    spearman_rho: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ranks(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def spearman(a: Sequence[float] | NDArray[np.float64], b: Sequence[float] | NDArray[np.float64]) -> float:
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def kendall_tau_b(a: Sequence[float] | NDArray[np.float64], b: Sequence[float] | NDArray[np.float64]) -> float:
    """Kendall's tau-b (nan when either side is constant): scipy's O(n log n) where installed (the tagger,
    profile and host extras), else O(n^2) pairs in blocks, fine for test sets of tens of thousands."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    try:
        from scipy.stats import kendalltau
    except ImportError:
        return _kendall_tau_b_pairs(x, y)
    return float(kendalltau(x, y).statistic)


def _kendall_tau_b_pairs(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    n = len(x)
    concordant_minus_discordant = 0.0
    ties_x = ties_y = 0.0  # pairs tied in x (resp. y), counted once
    block = 1024
    for start in range(0, n, block):
        xs, ys = x[start : start + block, None], y[start : start + block, None]
        dx = np.sign(xs - x[None, :])
        dy = np.sign(ys - y[None, :])
        rows = np.arange(start, min(start + block, n))[:, None]
        upper = np.arange(n)[None, :] > rows  # each unordered pair once
        concordant_minus_discordant += float((dx * dy)[upper].sum())
        ties_x += float(((dx == 0) & upper).sum())
        ties_y += float(((dy == 0) & upper).sum())
    pairs = n * (n - 1) / 2.0
    denom = np.sqrt((pairs - ties_x) * (pairs - ties_y))
    return float(concordant_minus_discordant / denom) if denom > 0 else float("nan")


def length_metrics(pred: Sequence[float], true: Sequence[float]) -> LengthMetrics:
    """All metrics of predictions against true lengths (true lengths must be >= 1)."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError("pred and true must be equally long, non-empty 1-d sequences")
    err = np.abs(p - t)
    return LengthMetrics(
        n=len(p),
        mae=float(err.mean()),
        mape=float((err / t).mean() * 100.0),
        median_ae=float(np.median(err)),
        acc50=float((err <= 50).mean()),
        acc100=float((err <= 100).mean()),
        kendall_tau=kendall_tau_b(p, t),
        spearman_rho=spearman(p, t),
    )
