from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockctl.engine.profile import load_profile
from blockctl.errors import ConfigError
from blockctl_agents.profiler.allreduce import AllReduceModel, fit
from blockctl_agents.profiler.grid import DEFAULT_GRID, GridSpec, points
from blockctl_agents.profiler.shape import BUILTIN, resolve, shard


def test_default_grid_matches_the_measured_seed_grid() -> None:
    seed = load_profile("h100/llama-2-7b").rows
    ours = {tuple(p.as_row().values()) for p in points(DEFAULT_GRID)}
    assert len(ours) == 181
    assert ours == {(r.prefill_tokens, r.prefill_cached, r.decode_batch, r.decode_context) for r in seed}


def test_grid_capped_by_engine_limits_keeps_the_limit() -> None:
    spec = DEFAULT_GRID.capped(max_num_batched_tokens=512, max_num_seqs=48, max_model_len=1500)
    assert spec.prefill_tokens == (0, 16, 64, 256, 512)
    assert spec.decode_batch == (0, 1, 8, 32, 48)
    assert spec.decode_context == (256, 1024, 1500)
    assert all(p.decode_batch * p.decode_context <= 65536 for p in points(spec))


def test_grid_never_has_an_empty_step() -> None:
    spec = GridSpec(prefill_tokens=(0, 8), prefill_cached=(0,), decode_batch=(0, 2), decode_context=(4,))
    assert [tuple(p.as_row().values()) for p in points(spec)] == [(0, 0, 2, 4), (8, 0, 0, 0), (8, 0, 2, 4)]


def test_shape_from_config_dir_with_gqa(tmp_path: Path) -> None:
    cfg = {
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        "torch_dtype": "bfloat16",
        "max_position_embeddings": 32768,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shape = resolve(str(tmp_path))
    assert (shape.num_kv_heads, shape.head_dim, shape.num_layers, shape.dtype) == (4, 128, 28, "bfloat16")
    assert shape.name == tmp_path.name


def test_builtin_names_include_the_engine_shapes_and_a_tiny_cpu_shape() -> None:
    assert resolve("llama-2-7b") is BUILTIN["llama-2-7b"]
    assert resolve("tiny").dtype == "float32"


def test_bad_config_names_the_missing_key(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ConfigError, match="num_attention_heads"):
        resolve(str(tmp_path))


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        resolve("no-such-shape")


def test_tensor_parallel_shard_splits_heads_and_mlp_and_replicates_few_kv_heads() -> None:
    qwen = BUILTIN["qwen2-7b"]
    half = shard(qwen, 2)
    assert (half.heads, half.kv_heads, half.mlp, half.head_dim, half.tp) == (14, 2, 9472, 128, 2)
    assert shard(qwen, 4).kv_heads == 1
    assert shard(BUILTIN["llama-2-7b"], 4).kv_heads == 8
    with pytest.raises(ConfigError, match="tensor-parallel size 3"):
        shard(qwen, 3)


def test_allreduce_model_and_its_fit_recover_the_constants() -> None:
    truth = AllReduceModel(latency_us=10.0, bus_gbps=200.0)
    sizes = [2**k for k in range(10, 28, 2)]
    measured = [truth.allreduce_ms(n, 4) for n in sizes]
    got = fit(sizes, measured, 4)
    assert got.latency_us == pytest.approx(10.0, rel=1e-6)
    assert got.bus_gbps == pytest.approx(200.0, rel=1e-6)
    assert truth.allreduce_ms(1 << 20, 1) == 0.0
    # Two all-reduces per layer of tokens × hidden × 2 bytes.
    one = truth.allreduce_ms(512 * 4096 * 2, 2)
    assert truth.step_ms(512, hidden=4096, layers=32, dtype_bytes=2, tp=2) == pytest.approx(64 * one)


@pytest.mark.slow
def test_allreduce_measurement_runs_across_processes_with_gloo() -> None:
    from blockctl_agents.profiler.allreduce import measure

    sizes = [1 << 12, 1 << 20]
    ms = measure(2, sizes, backend="gloo", repeats=3)
    assert len(ms) == 2
    assert all(x > 0 for x in ms)
