"""Step-time noise: seeded, centred on the model, and the same spread whether steps are jumped or stepped."""

from __future__ import annotations

import math
import statistics

import pytest

from blockctl.engine.core import Engine
from blockctl.engine.profile import load_profile
from blockctl.engine.types import Request

PROFILE = load_profile("h100/llama-2-7b")
CFG = PROFILE.engine_defaults()


def _finish(seed: int, noise: float, fast: bool, out: int = 300) -> float:
    eng = Engine(CFG, PROFILE.model, noise=noise, seed=seed)
    eng.fast_forward = fast
    reqs = [Request(f"r{i}", 100 + 50 * i, out + 40 * i) for i in range(4)]
    for r in reqs:
        eng.add(r)
    eng.run_until(math.inf)
    assert all(r.finish_time is not None for r in reqs)
    return max(r.finish_time or 0.0 for r in reqs)


def test_noise_is_seeded() -> None:
    assert _finish(1, 0.05, True) == _finish(1, 0.05, True)
    assert _finish(1, 0.05, False) == _finish(1, 0.05, False)
    assert _finish(1, 0.05, True) != _finish(2, 0.05, True)


def test_noise_spread_agrees_between_jumps_and_steps() -> None:
    sigma = 0.05
    exact = _finish(0, 0.0, False)
    stepped = [_finish(s, sigma, False) for s in range(60)]
    jumped = [_finish(s, sigma, True) for s in range(60)]
    for xs in (stepped, jumped):
        assert statistics.mean(xs) == pytest.approx(exact, rel=0.01)
    ratio = statistics.stdev(jumped) / statistics.stdev(stepped)
    assert 0.6 < ratio < 1.6


def test_run_until_infinity_keeps_a_finite_clock() -> None:
    eng = Engine(CFG, PROFILE.model)
    eng.add(Request("a", 10, 3))
    eng.run_until(math.inf)
    assert math.isfinite(eng.now) and not eng.has_work()
