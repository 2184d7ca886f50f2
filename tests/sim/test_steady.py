"""Steady-state probes: stability, warm-up, last third, early-stop windows, saturation-first search."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockctl.bench.capacity import Slo
from blockctl.bench.steady import (
    ProbeOutcome,
    abort_windows,
    evaluate,
    last_third_start,
    overloaded,
    warmup_count,
    window_throughput,
)
from blockctl.bench.steady_search import Plan, find_capacity, find_saturation

SLO = Slo("ttft", "p99", 3.0)


def _run(n: int, qps: float, service: float, ttft: list[float] | None = None
         ) -> tuple[list[float], list[float | None], dict[Slo, list[float]]]:
    """n arrivals at ``qps``; a single FCFS server completing ``service`` requests per second."""
    arrivals = [i / qps for i in range(n)]
    finishes: list[float | None] = []
    free_at = 0.0
    for a in arrivals:
        free_at = max(free_at, a) + 1.0 / service
        finishes.append(free_at)
    waits = ttft if ttft is not None else [f - a for a, f in zip(arrivals, finishes, strict=True) if f is not None]
    return arrivals, finishes, {SLO: waits}


def test_slo_value_with_failed_requests_is_inf_never_nan() -> None:
    assert SLO.value([1.0, 2.0, math.inf]) == math.inf  # numpy's percentile gives nan here
    assert Slo("ttft", "p50", 3.0).value([1.0, 2.0, math.inf]) == 2.0
    assert Slo("ttft", "mean", 3.0).value([1.0, math.inf]) == math.inf
    assert Slo("ttft", "p100", 3.0).value([math.inf, math.inf]) == math.inf


@settings(deadline=None)
@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=60), st.sampled_from([1, 50, 90, 99, 99.9, 100]))
def test_slo_value_equals_numpy_on_finite_samples(xs: list[float], q: float) -> None:
    assert Slo("e2e", f"p{q:g}", 1.0).value(xs) == pytest.approx(float(np.percentile(xs, q)), abs=1e-9)


def test_a_server_that_keeps_up_is_stable_and_one_that_falls_behind_is_not() -> None:
    arrivals, finishes, samples = _run(1000, 10.0, 12.0)
    ok = evaluate(10.0, arrivals, finishes, samples)
    assert ok.stable and ok.held and ok.slo_value is not None and ok.slo_value < 3.0
    arrivals, finishes, samples = _run(1000, 10.0, 9.0)  # 10 % too slow: the queue grows all run
    bad = evaluate(10.0, arrivals, finishes, samples)
    assert bad.stable is False and not bad.held
    assert bad.completed_rps == pytest.approx(9.0, rel=0.01) and bad.offered_rps == pytest.approx(10.0)


def test_completions_within_three_percent_count_as_stable() -> None:
    arrivals = [float(i) for i in range(1000)]
    w = warmup_count(1000)
    lagging = [a + 0.5 if i % 50 else None for i, a in enumerate(arrivals)]  # 2 % never finish
    assert window_throughput(arrivals, lagging).stable
    lagging = [a + 0.5 if i % 20 else None for i, a in enumerate(arrivals)]  # 5 % never finish
    assert not window_throughput(arrivals, lagging).stable
    assert window_throughput(arrivals, lagging).arrived == 1000 - w - 1


def test_warmup_is_left_out_and_the_last_third_is_judged_on_its_own() -> None:
    n = 900
    assert (warmup_count(n), last_third_start(n)) == (90, 600)
    arrivals = [float(i) for i in range(n)]
    finishes: list[float | None] = [a + 0.1 for a in arrivals]
    slow_start = [10.0 if i < warmup_count(n) else 0.1 for i in range(n)]  # only warm-up is slow
    assert evaluate(1.0, arrivals, finishes, {SLO: slow_start}).held
    growing = [5.0 if i >= n - 6 else 0.1 for i in range(n)]  # a late break: 6 of 810, but 6 of the last 300
    out = evaluate(1.0, arrivals, finishes, {SLO: growing})
    assert out.slo_value is not None and out.slo_value <= 3.0  # over all post-warm-up requests: hidden
    assert out.last_third_values[str(SLO)] == 5.0 and not out.held


def test_abort_windows_match_what_evaluate_judges() -> None:
    windows = abort_windows([SLO, Slo("tpot", "p99", 1.0), Slo("e2e", "mean", 9.0)], 3000)
    assert [(w.slo, w.start) for w in windows] == [(SLO, 300), (SLO, 2000)]
    for w in windows:
        assert w.allowed == SLO.max_violations(3000 - w.start)


def _fake_cluster(capacity: float, saturation: float, thrashing: float | None = None,
                  ) -> tuple[list[tuple[float, bool]], object]:
    """Holds its SLO up to ``capacity`` while stable; completes at most ``saturation`` req/s, and only
    ``thrashing`` req/s once offered more than ``capacity`` (when given)."""
    calls: list[tuple[float, bool]] = []

    def probe(q: float, sat: bool) -> ProbeOutcome:
        calls.append((q, sat))
        done = min(q, saturation if thrashing is None or q <= capacity else thrashing)
        stable = done >= 0.97 * q
        return ProbeOutcome(q, q <= capacity and stable, stable, {"x": 0.0}, {"x": 0.0}, done, q, 100)

    return calls, probe


def test_saturation_first_then_capacity_below_it() -> None:
    calls, probe = _fake_cluster(180.0, 200.0)
    plan = Plan(start=96.0)
    sat = find_saturation(probe, plan)  # type: ignore[arg-type]
    assert sat is not None and sat.completed_rps == 200.0
    assert [q for q, _ in calls] == [96.0, 144.0, 216.0]  # × 1.5 until overloaded (200 < 0.94 × 216)
    res = find_capacity(probe, plan, sat)  # type: ignore[arg-type]
    assert 180.0 * 0.99 <= res.capacity <= 180.0 and not res.capped and not res.at_saturation
    assert all(q <= 200.0 for q, s in calls if not s)  # no capacity probe above saturation
    assert res.to_dict()["saturation"] == 200.0
    assert {"qps", "held", "stable", "slo_value"} <= set(res.to_dict()["probes"][0])  # type: ignore[index]


def test_a_hint_measures_saturation_in_one_probe_and_a_ceiling_is_never_a_measurement() -> None:
    calls, probe = _fake_cluster(1e9, 200.0)
    sat = find_saturation(probe, Plan(start=10.0), hint=190.0)  # type: ignore[arg-type]
    assert sat is not None and len(calls) == 1 and calls[0][0] == pytest.approx(190.0 * 1.15)
    calls, probe = _fake_cluster(1e9, 1e9)  # never overloaded below the ceiling
    plan = Plan(start=10.0, max_qps=50.0)
    assert find_saturation(probe, plan) is None  # type: ignore[arg-type]
    res = find_capacity(probe, plan, None)  # type: ignore[arg-type]
    assert res.capped and res.capacity == 50.0 and res.saturation is None and not res.at_saturation
    calls, probe = _fake_cluster(1e9, 200.0)  # holds whatever it is offered, up to its saturation
    plan = Plan(start=96.0)
    held = find_capacity(probe, plan, find_saturation(probe, plan))  # type: ignore[arg-type]
    assert 200.0 <= held.capacity <= 200.0 / 0.97 and held.at_saturation and not held.capped
    assert overloaded(ProbeOutcome(10.0, False, False, {}, {}, 8.0, 10.0)) and not overloaded(
        ProbeOutcome(10.0, True, True, {}, {}, 9.9, 10.0))


def test_an_engine_that_thrashes_when_overloaded_is_searched_above_its_saturation() -> None:
    """Sustains 42 req/s, but offered more completes only 39.5 (KV thrash): the saturation probe measures
    39.5, the capacity is still 42."""
    calls, probe = _fake_cluster(42.0, 1e9, thrashing=39.5)
    plan = Plan(start=24.0, resolution=0.1, rel_resolution=0.0)
    sat = find_saturation(probe, plan, hint=39.0)  # type: ignore[arg-type]
    assert sat is not None and sat.completed_rps == 39.5
    res = find_capacity(probe, plan, sat)  # type: ignore[arg-type]
    assert res.at_saturation and not res.capped
    assert 42.0 - 0.1 <= res.capacity <= 42.0
    runs = [q for q, s in calls if not s]
    assert len(runs) == len(set(runs))  # the saturation rate that held is not run twice
