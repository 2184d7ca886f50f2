"""Metrics on hand-worked numbers: TPOT, percentiles, throughput, goodput, CDF points, SLO parsing."""

from __future__ import annotations

import math

import pytest

from blockctl.bench.metrics import (
    RequestRecord,
    RequestSlo,
    Stats,
    cdf_points,
    duration_of,
    metric_values,
    parse_request_slo,
    summarize,
)
from blockctl.errors import ConfigError


def _rec(i: int, sent: float, ttft: float, e2e: float, out: int, *, error: str | None = None) -> RequestRecord:
    return RequestRecord(
        index=i,
        prompt_tokens=10,
        output_tokens=out,
        scheduled_s=sent,
        sent_s=sent + 0.001 * i,
        ttft_s=ttft,
        e2e_s=e2e,
        itl_s=tuple([(e2e - ttft) / (out - 1)] * (out - 1)) if out > 1 else (),
        error=error,
    )


RECORDS = [
    _rec(0, 0.0, 0.1, 1.1, 11),  # tpot 0.1
    _rec(1, 1.0, 0.2, 2.2, 21),  # tpot 0.1, ends at 3.201
    _rec(2, 2.0, 0.3, 0.3, 1),  # one token: no tpot
    _rec(3, 2.5, 0.5, 0.6, 0, error="HTTP 500: boom"),
]


def test_tpot_and_lateness() -> None:
    assert RECORDS[0].tpot_s == pytest.approx(0.1)
    assert RECORDS[2].tpot_s is None
    assert RECORDS[1].lateness_s == pytest.approx(0.001)


def test_summary_by_hand() -> None:
    s = summarize(RECORDS, slo=RequestSlo(ttft=0.25, tpot=0.15))
    assert (s.requests, s.completed, s.failed) == (4, 3, 1)
    # first send 0.0, last finish: request 3 failed at 2.503 + 0.6 = 3.103 < request 1's 1.001 + 2.2 = 3.201
    assert s.duration_s == pytest.approx(3.201)
    assert s.request_throughput == pytest.approx(3 / 3.201)
    assert s.output_token_throughput == pytest.approx(33 / 3.201)
    assert s.total_token_throughput == pytest.approx(63 / 3.201)
    assert s.ttft.mean == pytest.approx(0.2) and s.ttft.p50 == pytest.approx(0.2)
    assert s.ttft.p90 == pytest.approx(0.28)  # linear: 0.2 + 0.8 * (0.3 - 0.2)
    assert s.tpot.n == 2 and s.tpot.mean == pytest.approx(0.1)
    assert s.itl.n == 30 and s.itl.p99 == pytest.approx(0.1)
    assert s.e2e.max == pytest.approx(2.2)
    # good: request 0 (ttft 0.1, tpot 0.1) and 1 (ttft 0.2); not 2 (no tpot to check against tpot limit)
    assert s.slo_attainment == pytest.approx(2 / 4)
    assert s.goodput == pytest.approx(2 / 3.201)
    assert s.errors == {"HTTP 500: boom": 1}


def test_one_token_request_meets_ttft_only_slo() -> None:
    assert RequestSlo(ttft=0.5).met(RECORDS[2])
    assert not RequestSlo(ttft=0.5).met(RECORDS[3])  # failed is never good


def test_empty_and_all_failed() -> None:
    s = summarize([RECORDS[3]])
    assert s.completed == 0 and math.isnan(s.ttft.p99) and s.goodput is None
    assert duration_of([]) == 0.0
    assert Stats.of([]).n == 0


def test_cdf_points() -> None:
    xs, ys = cdf_points([3.0, 1.0, 2.0, 4.0])
    assert xs == [1.0, 2.0, 3.0, 4.0] and ys == [0.25, 0.5, 0.75, 1.0]
    xs, ys = cdf_points(list(range(10_000)), max_points=100)
    assert len(xs) == 100 and xs[0] == 0 and xs[-1] == 9999 and ys[-1] == 1.0
    assert metric_values(RECORDS, "ttft") == [0.1, 0.2, 0.3]


def test_parse_request_slo() -> None:
    assert parse_request_slo("ttft=0.5, tpot=50ms,e2e=20s") == RequestSlo(ttft=0.5, tpot=0.05, e2e=20.0)
    assert str(RequestSlo(ttft=0.5, e2e=2)) == "ttft=0.5,e2e=2"
    for bad in ("ttft", "latency=3", "ttft=-1", "ttft=soon", ""):
        with pytest.raises(ConfigError, match="--slo"):
            parse_request_slo(bad)


def test_record_round_trip() -> None:
    r = RECORDS[1]
    assert RequestRecord.from_dict(r.to_dict()) == r
