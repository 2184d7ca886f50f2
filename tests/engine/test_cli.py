"""The `blockctl profile ...` and `blockctl bench engine` commands, run through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.engine.fit import mape_pct, row_shape
from blockctl.engine.profile import load_profile

runner = CliRunner()


def test_profile_list_json_reports_cv_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the shipped profiles only: profiles measured on this machine (the user's own) may fit however they fit
    monkeypatch.setenv("BLOCKCTL_PROFILES_DIR", str(tmp_path))
    res = runner.invoke(app, ["profile", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"h100/llama-2-7b", "h200/llama-2-7b", "h100/qwen2-7b"} <= set(rows)
    assert all(r["kfold_mape_pct"] <= 8.0 and r["kv_blocks"] > 0 for r in rows.values())


def test_profile_show_text_and_json() -> None:
    res = runner.invoke(app, ["profile", "show", "h100/qwen2-7b"])
    assert res.exit_code == 0, res.output
    assert "cross-validation" in res.stdout and "4 KV" in res.stdout
    res = runner.invoke(app, ["profile", "show", "h100/llama-2-7b", "--json", "--rows"])
    doc = json.loads(res.stdout)
    assert doc["shape"]["num_layers"] == 32 and len(doc["rows"]) == 181 and "model_ms" in doc["rows"][0]
    assert doc["engine_defaults"]["num_gpu_blocks"] == 7472


def test_profile_predict_is_comparable_to_measured_rows(tmp_path: Path) -> None:
    prof = load_profile("h100/llama-2-7b")
    rows = prof.rows[::30]
    steps = [{k: getattr(r, k) for k in ("prefill_tokens", "prefill_cached", "decode_batch", "decode_context")}
             for r in rows]
    f = tmp_path / "steps.json"
    f.write_text(json.dumps(steps))
    res = runner.invoke(app, ["profile", "predict", "h100/llama-2-7b", "--steps", str(f)])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert len(got) == len(rows)
    for ms, r in zip(got, rows, strict=True):
        assert ms == pytest.approx(prof.model.gpu_ms(row_shape(r.prefill_tokens, r.prefill_cached,
                                                                  r.decode_batch, r.decode_context)), abs=1e-3)
        assert abs(ms - r.ms_median) / r.ms_median < 0.15  # pure GPU time, like the rows
    res = runner.invoke(app, ["profile", "predict", "h100/llama-2-7b", "--steps", str(f), "--with-overhead"])
    assert json.loads(res.stdout)[0] == pytest.approx(got[0] + prof.model.overhead_ms, abs=2e-3)


def test_profile_predict_names_the_bad_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps([{"prefill_tokens": 16}, {"decode_batch": "8"}]))
    res = runner.invoke(app, ["profile", "predict", "h100/llama-2-7b", "--steps", str(f)])
    assert res.exit_code == 1 and f"{f}:[1].decode_batch" in res.output
    res = runner.invoke(app, ["profile", "show", "no/such"])
    assert res.exit_code == 1 and "no profile named" in res.output


def test_profile_import_fits_and_saves_a_measured_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKCTL_PROFILES_DIR", str(tmp_path / "profiles"))
    prof = load_profile("h200/llama-2-7b")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"info": {"gpu": "NVIDIA H200", "torch": "x", "method": "test"},
                                "rows": [r.to_dict() for r in prof.rows]}))
    res = runner.invoke(app, ["profile", "import", str(grid), "--name", "h200/mine", "--model", "llama-2-7b"])
    assert res.exit_code == 0, res.output
    mine = load_profile("h200/mine")
    assert mine.source == str(tmp_path / "profiles" / "h200" / "mine.json")
    assert mine.measurement["source_file"] == "grid.json" and len(mine.measurement["source_sha256"]) == 64
    # What matters is how well the refit predicts the measured grid, not bit-equality of the solver's answer:
    # a bounded nonlinear least squares lands on slightly different parameters with each scipy/numpy release.
    assert mape_pct(mine.model.params, prof.rows) == pytest.approx(mape_pct(prof.model.params, prof.rows), abs=0.05)
    assert mine.model.params.as_vector() == pytest.approx(prof.model.params.as_vector(), rel=1e-3)
    listed = runner.invoke(app, ["profile", "list", "--json"])
    assert "h200/mine" in {r["name"] for r in json.loads(listed.stdout)}


def test_bench_engine_json() -> None:
    res = runner.invoke(app, ["bench", "engine", "--json", "--running", "16", "--waiting", "4",
                              "--requests", "100", "--predicts", "100"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["steps_per_s"] > 0 and doc["ff_tokens_per_s"] > 0 and doc["predict_p50_us"] > 0
    assert doc["emulated_step_ms"] > 6.0  # a 16-sequence decode step on an H100 plus overhead
