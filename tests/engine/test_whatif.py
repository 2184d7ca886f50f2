"""What-if predictions: exact on a hand-checkable instance, pure, and ordered by load."""

from __future__ import annotations

import random

import pytest

from blockctl.engine.fit import row_shape
from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.engine.types import EngineConfig, Request, StepShape
from blockctl.engine.whatif import predict
from blockctl.errors import EngineError

PROFILE = load_profile(DEFAULT_PROFILE)
CFG = PROFILE.engine_defaults()


def _running(n: int, rng: random.Random) -> list[Request]:
    out = []
    for i in range(n):
        prompt, produced = rng.randint(50, 600), rng.randint(1, 300)
        out.append(Request(f"r{i}", prompt, produced + rng.randint(1, 300),
                           num_computed_tokens=prompt + produced - 1, num_output_tokens=produced))
    return out


def test_idle_instance_prediction_is_the_sum_of_its_step_times() -> None:
    model = PROFILE.model
    p = predict(CFG, model, [], [], Request("n", 200, 4))
    prefill = model.step_seconds(row_shape(200, 0, 0, 0))
    decodes = [model.step_seconds(StepShape(decode_batch=1, decode_context=200 + j)) for j in range(3)]
    assert p.queue_s == 0.0 and p.ttft_s == pytest.approx(prefill)
    assert p.e2e_s == pytest.approx(prefill + sum(decodes))
    assert (p.running, p.waiting, p.kv_free_blocks) == (0, 0, CFG.num_gpu_blocks)


def test_predict_mutates_nothing_and_is_deterministic() -> None:
    rng = random.Random(3)
    running = _running(48, rng)
    waiting = [Request(f"w{i}", rng.randint(50, 400), rng.randint(50, 400)) for i in range(32)]
    def progress() -> list[tuple[object, ...]]:
        return [(r.num_computed_tokens, r.num_output_tokens, r.phase, r.first_token_time) for r in running]

    before = progress()
    new = Request("n", 200, 250)
    a = predict(CFG, PROFILE.model, running, waiting, new)
    b = predict(CFG, PROFILE.model, running, waiting, new)
    assert a == b
    assert before == progress()
    assert new.first_token_time is None and new.num_computed_tokens == 0
    assert 0 < a.queue_s < a.ttft_s < a.e2e_s and a.running == 48 and a.waiting == 32
    assert a.kv_free_blocks < CFG.num_gpu_blocks


def test_more_load_never_predicts_sooner() -> None:
    rng = random.Random(5)
    running = _running(40, rng)
    waiting = [Request(f"w{i}", rng.randint(50, 400), rng.randint(50, 400)) for i in range(40)]
    new = Request("n", 300, 200)
    e2e = [predict(CFG, PROFILE.model, running, waiting[:k], new).e2e_s for k in range(0, 41, 8)]
    assert e2e == sorted(e2e) and e2e[-1] > e2e[0]


def test_a_full_instance_queues_the_new_request() -> None:
    cfg = EngineConfig(block_size=16, num_gpu_blocks=CFG.num_gpu_blocks, max_num_seqs=8,
                       max_num_batched_tokens=2048, max_model_len=4096)
    running = _running(8, random.Random(7))
    p = predict(cfg, PROFILE.model, running, [], Request("n", 100, 10))
    shortest = min(r.output_tokens - r.num_output_tokens for r in running)
    assert p.queue_s >= shortest * PROFILE.model.step_seconds(StepShape(decode_batch=8))


def test_overrun_predictions_and_impossible_requests() -> None:
    r = Request("late", 100, 5, num_computed_tokens=120, num_output_tokens=21)  # produced more than predicted
    p = predict(CFG, PROFILE.model, [r], [], Request("n", 50, 2))
    assert p.e2e_s > 0
    with pytest.raises(EngineError):
        predict(CFG, PROFILE.model, [], [], Request("n", 5000, 2))
