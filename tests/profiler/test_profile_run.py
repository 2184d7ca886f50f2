"""`blockctl profile run` end to end on the CPU: the same code path as on a GPU, with a tiny shape and grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.engine.fit import MeasuredRow
from blockctl.engine.profile import load_profile
from blockctl_agents.profiler.compare import agreement, region
from blockctl_agents.profiler.grid import QUICK_GRID, points

torch = pytest.importorskip("torch")


def test_profile_run_on_cpu_writes_a_loadable_fitted_profile(tmp_path: Path) -> None:
    out = tmp_path / "cpu-tiny.json"
    result = CliRunner().invoke(
        app,
        ["profile", "run", "--model", "tiny", "--device", "cpu", "--grid", "quick", "--repeats", "2",
         "--warmup", "0", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"] == len(points(QUICK_GRID)) == 24
    profile = load_profile(str(out))
    assert profile.shape.name == "tiny"
    assert profile.measurement["device"] == "cpu"
    assert all(r.ms_min <= r.ms_median <= r.ms_max and r.ms_median > 0 for r in profile.rows)
    assert "kfold_mape_pct" in profile.fit["cv"]
    # The fitted model answers for steps of any composition.
    assert profile.model.step_seconds(profile.rows[0].shape()) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_profile_run_without_gpu_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["profile", "run", "--model", "tiny", "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 1
    assert "no CUDA GPU" in result.output
    assert not (tmp_path / "x.json").exists()


def test_profile_run_rejects_an_unknown_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["profile", "run", "--model", "./nowhere", "--device", "cpu", "--out", str(tmp_path / "x.json")]
    )
    assert result.exit_code == 1
    assert "unknown model './nowhere'" in result.output


def _row(p: int, b: int, ms: float) -> MeasuredRow:
    return MeasuredRow(p, 0, b, 256 if b else 0, ms, ms, ms)


def test_agreement_per_region() -> None:
    ours = [_row(0, 8, 11.0), _row(0, 32, 9.0), _row(512, 0, 20.0), _row(64, 8, 10.0), _row(1024, 8, 30.0)]
    ref = [_row(0, 8, 10.0), _row(0, 32, 10.0), _row(512, 0, 20.0), _row(64, 8, 10.0)]
    got = {a.region: a for a in agreement(ours, ref)}
    assert set(got) == {"decode only", "prefill only", "mixed, chunk ≤ 256"}  # 1024-chunk step has no reference
    assert got["decode only"].steps == 2
    assert got["decode only"].median_abs_pct == pytest.approx(10.0)
    assert got["decode only"].mean_signed_pct == pytest.approx(0.0)
    assert got["prefill only"].max_abs_pct == 0.0
    assert region(_row(1024, 8, 1.0)) == "mixed, chunk > 256"
