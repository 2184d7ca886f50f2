"""Factories for engine tests: configs, flat step-time models, requests."""

from __future__ import annotations

from blockctl.engine.core import Engine
from blockctl.engine.steptime import StepTimeModel, StepTimeParams
from blockctl.engine.types import EngineConfig, Request


def flat_model(step_ms: float = 10.0, *, per_ctx_ktoken_ms: float = 0.0) -> StepTimeModel:
    """Every step takes ``step_ms`` (plus an optional cost per 1000 decode-context tokens); no overhead."""
    params = StepTimeParams(
        const_ms=step_ms, linear_mem_ms=0.0, linear_ms_per_token=0.0, roofline_p=1.0,
        prefill_attn_ms_per_mpair=0.0, cached_ms_per_ktoken=0.0, decode_attn_ms_per_ktoken=per_ctx_ktoken_ms,
        lm_head_ms_per_krow=0.0,
    )
    return StepTimeModel(params=params, overhead_ms=0.0)


def make_engine(
    *, block_size: int = 4, blocks: int = 100, seqs: int = 4, budget: int = 8, max_len: int = 4096,
    model: StepTimeModel | None = None,
) -> Engine:
    cfg = EngineConfig(block_size=block_size, num_gpu_blocks=blocks, max_num_seqs=seqs,
                       max_num_batched_tokens=budget, max_model_len=max_len)
    return Engine(cfg, model or flat_model())


def req(name: str, prompt: int, out: int, at: float = 0.0) -> Request:
    return Request(req_id=name, prompt_tokens=prompt, output_tokens=out, arrival_time=at)


def held_blocks(eng: Engine) -> int:
    return sum(eng.blocks_for(r.num_computed_tokens) for r in eng.running)
