"""Property tests of the engine model: block accounting, progress, monotone time, fast-forward == stepping."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockctl.engine.core import Engine
from blockctl.engine.profile import load_profile
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Phase, Request

from .helpers import flat_model, held_blocks

MODELS: dict[str, StepTimeModel] = {
    "flat": flat_model(10.0, per_ctx_ktoken_ms=3.0),
    "h100": load_profile("h100/llama-2-7b").model,
}

configs = st.builds(
    EngineConfig,
    block_size=st.sampled_from([1, 2, 4, 16]),
    num_gpu_blocks=st.integers(8, 64),
    max_num_seqs=st.integers(1, 8),
    max_num_batched_tokens=st.integers(4, 96),
    max_model_len=st.just(100_000),
)
workloads = st.lists(
    st.tuples(st.integers(1, 120), st.integers(1, 60), st.floats(0.0, 0.2)), min_size=1, max_size=14
)


def _fitting(cfg: EngineConfig, spec: list[tuple[int, int, float]]) -> list[Request]:
    out, t = [], 0.0
    for i, (prompt, n_out, gap) in enumerate(spec):
        t += gap
        if -(-(prompt + n_out - 1) // cfg.block_size) <= cfg.num_gpu_blocks:
            out.append(Request(req_id=f"r{i}", prompt_tokens=prompt, output_tokens=n_out, arrival_time=t))
    return out


def _run_stepwise(cfg: EngineConfig, model: StepTimeModel, reqs: list[Request]) -> Engine:
    """Step one by one, checking the invariants after every step."""
    eng = Engine(cfg, model)
    pending = list(reqs)
    last_now = eng.now
    while pending or eng.has_work():
        while pending and (pending[0].arrival_time <= eng.now or not eng.has_work()):
            r = pending.pop(0)
            eng.now = max(eng.now, r.arrival_time)
            eng.add(r)
        res = eng.step()
        assert res is not None  # work present means something is schedulable
        assert 0 <= eng.free_blocks == cfg.num_gpu_blocks - held_blocks(eng)
        assert len(eng.running) <= cfg.max_num_seqs and res.shape.total_tokens <= cfg.max_num_batched_tokens
        assert eng.now > last_now
        last_now = eng.now
        for r in eng.running:
            assert r.num_computed_tokens <= r.prompt_tokens + r.num_output_tokens
            assert r.num_output_tokens < r.output_tokens
    return eng


def _run_fast(cfg: EngineConfig, model: StepTimeModel, reqs: list[Request]) -> Engine:
    eng = Engine(cfg, model)
    for r in reqs:
        eng.run_until(r.arrival_time)
        eng.add(r)
        assert 0 <= eng.free_blocks == cfg.num_gpu_blocks - held_blocks(eng)
    eng.run_until(math.inf)
    return eng


def _clone(reqs: list[Request]) -> list[Request]:
    return [Request(r.req_id, r.prompt_tokens, r.output_tokens, arrival_time=r.arrival_time) for r in reqs]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, spec=workloads, model_name=st.sampled_from(sorted(MODELS)))
def test_fast_forward_equals_step_by_step(cfg: EngineConfig, spec: list[tuple[int, int, float]],
                                          model_name: str) -> None:
    model = MODELS[model_name]
    reqs = _fitting(cfg, spec)
    stepped = _clone(reqs)
    fast = _clone(reqs)
    e1 = _run_stepwise(cfg, model, stepped)
    e2 = _run_fast(cfg, model, fast)
    assert e1.free_blocks == e2.free_blocks == cfg.num_gpu_blocks
    assert e1.num_preemptions_total == e2.num_preemptions_total
    for a, b in zip(stepped, fast, strict=True):
        assert a.phase == b.phase == Phase.FINISHED  # every admitted request finishes
        assert a.num_output_tokens == b.num_output_tokens == a.output_tokens
        assert a.first_token_time is not None and a.finish_time is not None and b.finish_time is not None
        assert a.arrival_time <= a.first_token_time <= a.finish_time
        assert b.finish_time == pytest.approx(a.finish_time, rel=1e-9, abs=1e-9)
        assert b.first_token_time == pytest.approx(a.first_token_time, rel=1e-9, abs=1e-9)
        assert a.num_preemptions == b.num_preemptions


@settings(max_examples=60, deadline=None)
@given(cfg=configs, spec=workloads, cut=st.floats(0.0, 3.0))
def test_run_until_stops_before_the_limit_like_stepping(
    cfg: EngineConfig, spec: list[tuple[int, int, float]], cut: float
) -> None:
    model = MODELS["h100"]
    reqs = _fitting(cfg, spec)
    engines = []
    for ff in (False, True):
        eng = Engine(cfg, model)
        eng.fast_forward = ff
        for r in _clone(reqs):
            eng.add(r)
        eng.run_until(cut)
        engines.append(eng)
    slow, fast = engines
    assert fast.now == pytest.approx(slow.now, rel=1e-9, abs=1e-9)
    assert [r.num_output_tokens for r in fast.running] == [r.num_output_tokens for r in slow.running]
    assert fast.free_blocks == slow.free_blocks


@settings(max_examples=80, deadline=None)
@given(
    cfg=configs,
    ops=st.lists(st.tuples(st.sampled_from(["add", "step", "abort", "abort_mid"]), st.integers(1, 120),
                           st.integers(1, 40)), min_size=1, max_size=40),
)
def test_aborts_at_any_point_keep_block_accounting(cfg: EngineConfig, ops: list[tuple[str, int, int]]) -> None:
    eng = Engine(cfg, MODELS["flat"])
    ids: list[str] = []
    for n, (op, a, b) in enumerate(ops):
        if op == "add":
            if -(-(a + b - 1) // cfg.block_size) <= cfg.num_gpu_blocks:
                eng.add(Request(f"r{n}", a, b))
                ids.append(f"r{n}")
        elif op == "step":
            eng.step()
        elif ids:
            victim = ids[a % len(ids)]
            plan = eng.schedule() if op == "abort_mid" else None
            gone = eng.abort(victim)
            assert gone is None or gone.phase == Phase.FINISHED
            if plan is not None:
                eng.complete(plan)
        assert 0 <= eng.free_blocks == cfg.num_gpu_blocks - held_blocks(eng)
    eng.run_until(math.inf)
    assert eng.free_blocks == cfg.num_gpu_blocks and not eng.has_work()
