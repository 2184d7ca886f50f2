"""--lengths synthetic:TAU: a length predictor of chosen ranking quality, calibrated as a tagger is."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict

import pytest

from blockctl.bench.sim.lengths import LengthSpec, parse_lengths, predicted_dists, predicted_lengths
from blockctl.bench.sim.synthetic import BINS, sigma_for_tau, synthetic_predictions
from blockctl.errors import ConfigError
from blockctl.tagger.metrics import kendall_tau_b as kendall_tau


def _heavy_tailed(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [max(1, min(4000, round(rng.lognormvariate(4.8, 1.1)))) for _ in range(n)]


def test_parse() -> None:
    assert parse_lengths("synthetic:0.49") == LengthSpec("synthetic", tau=0.49)
    assert str(parse_lengths("synthetic:0.7")) == "synthetic:0.7"
    for bad in ("synthetic", "synthetic:x", "synthetic:0", "synthetic:-0.2", "synthetic:1.5"):
        with pytest.raises(ConfigError, match="--lengths"):
            parse_lengths(bad)


@pytest.mark.parametrize("tau", [0.3, 0.49, 0.7, 0.9])
def test_answers_rank_the_true_lengths_at_the_asked_tau(tau: float) -> None:
    true = _heavy_tailed(6000)
    means, _ = synthetic_predictions(true, tau, seed=1)
    assert kendall_tau(means, true) == pytest.approx(tau, abs=0.04)


def test_more_noise_ranks_worse() -> None:
    true = _heavy_tailed(3000)
    sigmas = [sigma_for_tau(true, tau, seed=2) for tau in (0.9, 0.7, 0.5, 0.3)]
    assert sigmas == sorted(sigmas) and sigmas[0] > 0
    assert sigma_for_tau(true, 1.0, seed=2) == 0.0  # perfect ranking: no noise


def test_answers_are_a_calibrated_tagger_s() -> None:
    """Ten bins; each answer is its bin's mean and its distribution that bin's atoms, drawn from true lengths;
    on fresh requests the atoms cover as much as they claim (calibrated on an independent noise draw)."""
    true = _heavy_tailed(8000, seed=3)
    means, dists = synthetic_predictions(true, 0.6, seed=4)
    assert len(set(means)) <= BINS
    by_mean: dict[int, list[int]] = defaultdict(list)
    for m, t, d in zip(means, true, dists, strict=True):
        by_mean[m].append(t)
        assert list(d.atoms) == sorted(d.atoms) and len(d.atoms) > 1
        assert min(true) <= d.atoms[0] and d.atoms[-1] <= max(true)
    for m, ts in by_mean.items():  # each bin's mean is the mean of what fell in it (up to the noise draws)
        assert statistics.fmean(ts) == pytest.approx(m, rel=0.2)
    inside = sum(d.quantile(0.1) <= t <= d.quantile(0.9) for t, d in zip(true, dists, strict=True))
    assert inside / len(true) == pytest.approx(0.8, abs=0.05)


def test_deterministic_and_a_longer_run_starts_with_the_same_answers() -> None:
    true = _heavy_tailed(5000, seed=5)
    full = synthetic_predictions(true, 0.49, seed=6)
    assert synthetic_predictions(list(true), 0.49, seed=6) == full
    short = synthetic_predictions(true[:4200], 0.49, seed=6)
    assert short[0] == full[0][:4200] and short[1] == full[1][:4200]
    assert synthetic_predictions(true, 0.49, seed=7)[0] != full[0]


def test_the_simulator_gets_numbers_and_distributions() -> None:
    spec = parse_lengths("synthetic:0.7")
    true = _heavy_tailed(500, seed=8)
    prompts: list[str | None] = [None] * len(true)  # no prompt text needed: nothing reads prompts
    predicted = predicted_lengths(spec, true, prompts, seed=9)
    dists = predicted_dists(spec, predicted, prompts, true_lengths=true, seed=9)
    assert dists is not None and len(dists) == len(true)
    assert all(d is not None and min(d.atoms) <= p <= max(d.atoms) for p, d in zip(predicted, dists, strict=True))
