"""Profiles and the step-time model: held-out fit quality, sane extrapolation, round trip, KV capacity."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from blockctl.engine.fit import MeasuredRow, fit_params, kfold_mape, predict_rows, row_shape
from blockctl.engine.profile import (
    DEFAULT_PROFILE,
    build_profile,
    list_profiles,
    load_profile,
    write_profile,
)
from blockctl.engine.shape import KNOWN_MODELS, ModelShape, kv_block_bytes, num_kv_blocks
from blockctl.engine.types import StepShape
from blockctl.errors import ConfigError, ProfileError

SHIPPED = ["h100/llama-2-7b", "h100/qwen2-7b", "h200/llama-2-7b"]


def test_the_three_measured_profiles_ship() -> None:
    assert set(SHIPPED) <= set(list_profiles())
    assert DEFAULT_PROFILE in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_fit_generalises_to_rows_it_never_saw(name: str) -> None:
    prof = load_profile(name)
    assert len(prof.rows) >= 150
    cv = prof.fit["cv"]
    assert cv["kfold_mape_pct"] <= 8.0
    assert all(v <= 8.0 for v in cv["leave_one_region_out_mape_pct"].values())
    # Recomputed here, not trusted from the file: a fit on 4/5 of the rows predicts the other 1/5.
    assert kfold_mape(list(prof.rows), k=5, seed=1) <= 8.0


@pytest.mark.parametrize("name", SHIPPED)
def test_model_is_positive_and_monotone_far_outside_the_grid(name: str) -> None:
    model = load_profile(name).model
    rng = random.Random(0)
    for _ in range(300):
        base = dict(prefill_tokens=rng.randint(0, 20000), prefill_seqs=rng.randint(0, 8),
                    prefill_attn=rng.uniform(0, 1e9), decode_batch=rng.randint(0, 2048),
                    decode_context=rng.randint(0, 4_000_000), prefill_cached=rng.randint(0, 100_000))
        t0 = model.gpu_ms(StepShape(**base))  # type: ignore[arg-type]
        assert t0 > 0
        for key in base:
            bigger = dict(base)
            bigger[key] = base[key] * 2 + 1
            assert model.gpu_ms(StepShape(**bigger)) >= t0  # type: ignore[arg-type]
    assert model.step_seconds(StepShape(decode_batch=1)) * 1e3 == pytest.approx(
        model.gpu_ms(StepShape(decode_batch=1)) + model.overhead_ms
    )


def test_decode_run_sum_is_the_sum_of_steps() -> None:
    model = load_profile(DEFAULT_PROFILE).model
    batch, ctx, k = 37, 37 * 500, 123
    by_step = sum(model.step_seconds(StepShape(decode_batch=batch, decode_context=ctx + j * batch))
                  for j in range(k))
    assert model.decode_run_ms(batch, ctx, k) * 1e-3 == pytest.approx(by_step, rel=1e-12)


def test_rel_noise_comes_from_the_measured_spread() -> None:
    prof = load_profile(DEFAULT_PROFILE)
    assert 0.001 < prof.model.rel_noise < 0.05


def test_profile_round_trip(tmp_path: Path) -> None:
    prof = load_profile(DEFAULT_PROFILE)
    doc = build_profile("test/copy", prof.gpu, prof.shape, prof.rows[::2], {"method": "test"},
                        overhead_ms=2.5, cross_validate=False)
    path = tmp_path / "copy.json"
    write_profile(doc, path)
    again = load_profile(str(path))
    assert again.name == "test/copy" and again.shape == prof.shape and again.gpu == prof.gpu
    assert again.rows == prof.rows[::2] and again.model.overhead_ms == 2.5
    assert again.model.params == fit_params(list(prof.rows[::2]))
    shape = StepShape(prefill_tokens=300, prefill_seqs=1, prefill_attn=300 * 150.5, decode_batch=40,
                      decode_context=40_000)
    assert again.model.gpu_ms(shape) == pytest.approx(prof.model.gpu_ms(shape), rel=0.1)


def test_profile_predict_matches_fit_rows() -> None:
    prof = load_profile(DEFAULT_PROFILE)
    rows = list(prof.rows[:20])
    direct = [prof.model.gpu_ms(row_shape(r.prefill_tokens, r.prefill_cached, r.decode_batch,
                                          r.decode_context)) for r in rows]
    assert direct == pytest.approx(predict_rows(prof.model.params, rows), rel=1e-9)


def test_mixed_step_cost_applies_only_to_steps_with_both_kinds() -> None:
    model = load_profile(DEFAULT_PROFILE).model
    mix = model.params.mixed_step_ms
    assert mix > 0
    prefill = StepShape(prefill_tokens=100, prefill_seqs=1, prefill_attn=100 * 50.5)
    decode = StepShape(decode_batch=1, decode_context=500)
    both = StepShape(prefill_tokens=100, prefill_seqs=1, prefill_attn=100 * 50.5, decode_batch=1,
                     decode_context=500)
    alone = model.gpu_ms(prefill) + model.gpu_ms(decode) - model.params.const_ms
    assert model.gpu_ms(both) > max(model.gpu_ms(prefill), model.gpu_ms(decode)) + mix * 0.99
    assert model.gpu_ms(both) < alone + mix


def test_profiles_without_the_mixed_step_term_still_load(tmp_path: Path) -> None:
    doc = json.loads(Path(load_profile(DEFAULT_PROFILE).source).read_text())
    del doc["fit"]["params"]["mixed_step_ms"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    assert load_profile(str(path)).model.params.mixed_step_ms == 0.0


def test_bad_profiles_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no profile named"):
        load_profile("nope/none")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "blockctl-profile/1", "name": "x"}))
    with pytest.raises(ProfileError, match="gpu"):
        load_profile(str(bad))
    doc = json.loads((Path(load_profile(DEFAULT_PROFILE).source)).read_text())
    doc["fit"]["params"]["const_ms"] = -1
    bad.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="const_ms"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="at least 12"):
        fit_params([MeasuredRow(16, 0, 1, 256, 6.0, 5.9, 6.1)])


def test_kv_capacity_matches_a_hand_computed_vllm_figure() -> None:
    llama = KNOWN_MODELS["llama-2-7b"]
    # Llama-2-7B: 6,738,415,616 parameters; one 16-token block = 2*32*16*32*128*2 bytes = 8 MiB.
    assert llama.param_count() == 6_738_415_616
    assert kv_block_bytes(llama, 16) == 8 * 2**20
    total = 81559 * 2**20  # H100 80GB HBM3 as nvidia-smi reports it
    budget = int(total * 0.9)  # 76,968,728,985
    weights = 6_738_415_616 * 2
    activation = 2048 * (3 * 11008 + 4 * 4096) * 2 + 2 * 256 * 32000 * 4  # profiling step + sampler logits
    non_torch = 2**29
    expected = (budget - weights - activation - non_torch) // (8 * 2**20)
    assert expected == 7472
    assert num_kv_blocks(total, llama, gpu_memory_utilization=0.9) == 7472
    assert load_profile("h100/llama-2-7b").engine_defaults().num_gpu_blocks == 7472
    # GQA (Qwen2-7B: 4 KV heads of 28) leaves many more, smaller blocks.
    qwen = load_profile("h100/qwen2-7b").engine_defaults()
    assert qwen.num_gpu_blocks > 8 * 7472 and qwen.max_model_len == 32768
    assert load_profile("h200/llama-2-7b").engine_defaults().num_gpu_blocks > 14000


def test_kv_capacity_rejects_a_gpu_too_small() -> None:
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        num_kv_blocks(16 * 2**30, KNOWN_MODELS["llama-2-7b"], gpu_memory_utilization=0.5)
    with pytest.raises(ConfigError):
        num_kv_blocks(80 * 2**30, KNOWN_MODELS["llama-2-7b"], gpu_memory_utilization=1.5)
    with pytest.raises(ProfileError):
        ModelShape.from_dict({**KNOWN_MODELS["llama-2-7b"].to_dict(), "num_kv_heads": 5})



def test_a_fit_out_of_evaluations_goes_on_from_where_it_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Noisy timings (a profile taken on a busy host) can exhaust least_squares' evaluation budget; the fit
    then continues from its best point instead of failing the whole profile run."""
    import blockctl.engine.fit as fit

    rows = list(load_profile(DEFAULT_PROFILE).rows[::2])
    full = fit_params(rows)
    monkeypatch.setattr(fit, "_MAX_NFEV", 3)  # the first attempt surely runs out
    resumed = fit_params(rows)
    assert fit.mape_pct(resumed, rows) == pytest.approx(fit.mape_pct(full, rows), abs=0.05)
    monkeypatch.setattr(fit, "_MORE_NFEV", 3)  # ... and the second too: the best point found is kept
    best = fit_params(rows)
    assert all(math.isfinite(v) for v in best.as_vector()) and fit.mape_pct(best, rows) < 100.0
