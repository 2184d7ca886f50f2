"""`blockctl bench overhead` end to end at a small size: real daemon, real null agents, sane figures."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app


@pytest.mark.slow
def test_bench_overhead_json() -> None:
    affinity = os.sched_getaffinity(0)
    result = CliRunner().invoke(app, ["bench", "overhead", "--requests", "200", "--latency-requests", "40",
                                      "--concurrency", "8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    lat, thr = report["latency"], report["throughput"]
    assert thr["errors"] == 0 and thr["requests"] == 200 and thr["req_per_s"] > 0
    assert thr["req_per_cpu_second"] > 0
    assert 0 < lat["direct_ms"]["p50"] <= lat["direct_ms"]["p99"]
    assert lat["scheduler_ms"]["p50"] > 0 and lat["scheduler_cpu_ms_per_request"] > 0
    assert os.sched_getaffinity(0) == affinity  # the load generator's pinning is undone


def test_bench_overhead_rejects_bad_options() -> None:
    result = CliRunner().invoke(app, ["bench", "overhead", "--policy", "fastest"])
    assert result.exit_code == 1 and "unknown policy 'fastest'" in result.output
    result = CliRunner().invoke(app, ["bench", "overhead", "--requests", "0"])
    assert result.exit_code == 1 and "requests" in result.output


@pytest.mark.slow
def test_bench_overhead_through_real_agents_json() -> None:
    from tests.conftest import free_base_port

    result = CliRunner().invoke(app, ["bench", "overhead", "--agents", "real", "--latency-requests", "20",
                                      "--base-port", str(free_base_port()), "--json"])
    assert result.exit_code == 0, result.output
    lat = json.loads(result.stdout)["latency"]
    assert 0 < lat["direct_ms"]["p50"] <= lat["direct_ms"]["p99"]
    assert lat["scheduler_ms"]["p50"] > 0 and lat["scheduler_cpu_ms_per_request"] > 0
    assert lat["agents_cpu_ms_per_request"] > 0  # the routed requests went through the real agents
