"""A length predictor of chosen quality, for asking how good a predictor must be before prediction pays.

``--lengths synthetic:TAU`` scores each request ``ln(true length) + σ·z`` (z standard normal) with σ set so that
the scores rank the run's true lengths at Kendall τ = TAU, and then answers exactly as a trained tagger does:
ten quantile bins of the scores, each with the mean and 32 quantiles of the true lengths that fall in it. The
router gets its bin's mean and those atoms, the shape ``tagger:DIR`` gives. The bins are fitted on an
independent draw of the noise over the same lengths, i.e. as if calibrated on unlimited held-out data: the
distribution is as well calibrated as a predictor of that τ can be.

So ``synthetic:0.49`` is the default tagger's ranking quality (Kendall τ 0.488 on held-out ShareGPT) with ideal
calibration, and a sweep over TAU shows what each better (or worse) predictor would be worth in a setting.
The engine still runs the true lengths; nothing here looks at prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from blockctl.predict.lengths import LengthDist, dist
from blockctl.tagger.metrics import kendall_tau_b

BINS = 10  # as blockctl.tagger.calibration.fit's default, which a trained tagger is calibrated with
REFERENCE = 4000  # σ and the bins are fitted on the first this many requests, so a longer run of the same
# workload and seed starts with the same answers (the simulator grows a preparation when a probe needs more)
_SCALE = 1000.0  # scores are kept as whole thousandths: calibration bins whole-number predictions


def sigma_for_tau(lengths: Sequence[int], tau: float, *, seed: int) -> float:
    """The noise σ (on ln length) whose scores rank ``lengths`` at Kendall τ ≈ ``tau`` (bisection)."""
    logs = np.log(np.maximum(1, np.asarray(lengths, dtype=float)))
    z = np.random.default_rng(seed).standard_normal(len(logs))
    if tau >= kendall_tau_b(logs, logs):
        return 0.0
    lo, hi = 0.0, 64.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if kendall_tau_b(logs + mid * z, logs) > tau:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@lru_cache(maxsize=8)
def _predict(lengths: tuple[int, ...], tau: float, seed: int) -> tuple[tuple[int, ...], tuple[LengthDist, ...]]:
    from blockctl.tagger.calibration import fit

    true = np.maximum(1, np.asarray(lengths, dtype=float))
    ref = true[:REFERENCE]
    sigma = sigma_for_tau(ref.astype(int).tolist(), tau, seed=seed)

    def scores(values: np.ndarray, stream: int) -> list[int]:
        noise = np.random.default_rng([seed, stream]).standard_normal(len(values))
        return [int(v) for v in np.rint((np.log(values) + sigma * noise) * _SCALE)]

    calibration = fit(scores(ref, 2), ref.astype(int).tolist(), bins=BINS)  # an independent draw of the noise
    scored = scores(true, 1)
    means = tuple(calibration(s) for s in scored)
    dists = tuple(dist(calibration.atoms(s) or (m,)) for s, m in zip(scored, means, strict=True))
    return means, dists


def synthetic_predictions(true_lengths: Sequence[int], tau: float, *, seed: int
                          ) -> tuple[list[int], list[LengthDist]]:
    """Each request's predicted length (its bin's mean) and distribution (its bin's atoms); same seed, same
    answer."""
    means, dists = _predict(tuple(int(n) for n in true_lengths), float(tau), seed)
    return list(means), list(dists)
