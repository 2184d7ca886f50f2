"""``blockctl bench emulator``: the overhead arithmetic, and one short real run through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.errors import UpstreamError
from blockctl_agents.emulator.bench import Sample, summarize


def test_summarize_splits_cpu_per_step() -> None:
    before = Sample(cpu_s=10.0, wall_s=100.0, steps=1000, emulated_s=10.0, late_s=0.1, engine_s=1.0,
                    tokens=48_000, running=48)
    after = Sample(cpu_s=10.5, wall_s=105.5, steps=1500, emulated_s=15.0, late_s=0.15, engine_s=1.1,
                   tokens=72_000, running=47)
    o = summarize(before, after)
    assert o.steps == 500 and o.running == 47 and o.tokens_per_step == 48
    assert o.emulated_ms_per_step == pytest.approx(10.0)
    assert o.cpu_ms_per_step == pytest.approx(1.0)
    assert o.engine_ms_per_step == pytest.approx(0.2) and o.http_ms_per_step == pytest.approx(0.8)
    assert o.cpu_over_emulated == pytest.approx(0.1) and o.wall_over_emulated == pytest.approx(1.1)
    assert o.late_ms_per_step == pytest.approx(0.1)
    with pytest.raises(UpstreamError):
        summarize(after, after)


@pytest.mark.slow
def test_bench_emulator_cli_json() -> None:
    result = CliRunner().invoke(app, ["bench", "emulator", "--running", "4", "--duration", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["running"] == 4 and data["steps"] > 10
    assert data["tokens_per_step"] == pytest.approx(4, abs=0.5)
    assert 0 < data["cpu_ms_per_step"] < 10 * data["emulated_ms_per_step"]
