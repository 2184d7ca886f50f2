"""Capacity bisection on synthetic monotone functions, and run-level SLO parsing/evaluation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockctl.bench.capacity import Slo, bisect_capacity, parse_slos, search_capacity
from blockctl.errors import ConfigError


@settings(deadline=None)  # timing-free property; a loaded machine must not fail it
@given(
    threshold=st.floats(min_value=0.3, max_value=500.0),
    start=st.floats(min_value=0.1, max_value=300.0),
    resolution=st.floats(min_value=0.05, max_value=2.0),
)
def test_bisection_finds_threshold_within_resolution(
    threshold: float, start: float, resolution: float
) -> None:
    calls: list[float] = []

    def holds(qps: float) -> bool:
        calls.append(qps)
        return qps <= threshold

    res = bisect_capacity(holds, start=start, resolution=resolution)
    if threshold < resolution:
        assert res.capacity <= threshold
    else:
        assert threshold - resolution <= res.capacity <= threshold
    assert [q for q, _ in res.tried] == calls
    assert all(ok == (q <= threshold) for q, ok in res.tried)
    assert res.capacity == 0.0 or (res.capacity, True) in res.tried  # the answer was actually run


def test_bisection_brackets_by_doubling_then_bisects() -> None:
    res = bisect_capacity(lambda q: q <= 37.0, start=10.0, resolution=1.0)
    qps = [q for q, _ in res.tried]
    assert qps[:3] == [10.0, 20.0, 40.0]
    assert res.capacity == pytest.approx(36.875)
    assert len(qps) == 3 + 5  # 20..40 halved down to < 1 QPS wide in five more runs


def test_bisection_zero_capacity_and_cap() -> None:
    res = bisect_capacity(lambda q: False, start=8.0, resolution=1.0)
    assert res.capacity == 0.0 and [q for q, _ in res.tried] == [8.0, 4.0, 2.0, 1.0]
    capped = bisect_capacity(lambda q: True, start=8.0, resolution=1.0, max_qps=20.0)
    assert capped.capacity == 20.0 and capped.capped


def test_parse_slos() -> None:
    assert parse_slos("ttft-p99=3") == [Slo("ttft", "p99", 3.0)]
    assert parse_slos("ttft-p99=3, e2e-mean=20,tpot-p50=0.1") == [
        Slo("ttft", "p99", 3.0),
        Slo("e2e", "mean", 20.0),
        Slo("tpot", "p50", 0.1),
    ]
    assert str(parse_slos("ttft-p99.9=2.5")[0]) == "ttft-p99.9=2.5"


@pytest.mark.parametrize(
    "bad", ["", "ttft=3", "ttft-p99", "ttft-p99=x", "queue-p99=3", "ttft-p0=3", "ttft-p99=-1"]
)
def test_parse_slos_rejects(bad: str) -> None:
    with pytest.raises(ConfigError, match="--slo"):
        parse_slos(bad)


@settings(deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=400), st.integers(1, 99))
def test_max_violations_is_exactly_the_certain_break_point(samples: list[float], pct: int) -> None:
    slo = Slo("ttft", f"p{pct}", 5.0)
    allowed = slo.max_violations(len(samples))
    assert allowed is not None
    over = sum(s > 5.0 for s in samples)
    if over > allowed:
        assert not slo.holds(samples)
    assert 0 <= allowed < len(samples)


def test_max_violations_example() -> None:
    # p99 of 3000 samples interpolates between sorted indices 2969 and 2970: 31 samples over the limit
    # put index 2969 over it.
    slo = Slo("ttft", "p99", 3.0)
    assert slo.max_violations(3000) == 30
    assert not slo.holds([0.0] * 2969 + [3.5] * 31)
    assert Slo("ttft", "mean", 3.0).max_violations(3000) is None


def test_relative_resolution_stops_earlier_at_high_qps() -> None:
    res = bisect_capacity(lambda q: q <= 300.0, start=100.0, resolution=0.1, rel_resolution=0.01)
    assert 297.0 <= res.capacity <= 300.0
    assert len(res.tried) == 3 + 7  # 100, 200, 400, then 200 QPS wide halved to 1.6 (< 1 % of 300)


@pytest.mark.parametrize("threshold", [0.5, 37.0, 123.4, 999.0])
@pytest.mark.parametrize("width", [2, 3])
def test_search_asking_several_points_at_once_finds_the_same_capacity(threshold: float, width: int) -> None:
    rounds: list[list[float]] = []

    def holds_many(qs: list[float]) -> list[bool]:
        assert 1 <= len(qs) <= width
        rounds.append(qs)
        return [q <= threshold for q in qs]

    one = bisect_capacity(lambda q: q <= threshold, start=10.0, resolution=0.5)
    many = search_capacity(holds_many, width=width, start=10.0, resolution=0.5)
    assert many.capacity <= threshold < many.capacity + 0.5 or many.capacity == 0.0
    assert abs(many.capacity - one.capacity) < 0.5
    assert (many.capacity, True) in many.tried or many.capacity == 0.0
    assert len(rounds) < len(one.tried)  # fewer sequential rounds than one-at-a-time probes
