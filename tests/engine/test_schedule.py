"""Hand-worked schedules of the engine model: budget, chunking, admission limit, preemption, blocks."""

from __future__ import annotations

import pytest

from blockctl.engine.types import EngineConfig, Phase
from blockctl.errors import ConfigError, EngineError

from .helpers import flat_model, held_blocks, make_engine, req


def test_chunked_prefill_then_decode_with_block_accounting() -> None:
    eng = make_engine(block_size=4, blocks=100, budget=8)
    a = req("a", 10, 3)
    eng.add(a)
    s1 = eng.step()
    assert s1 is not None
    assert (s1.shape.prefill_tokens, s1.shape.prefill_seqs, s1.shape.decode_batch) == (8, 1, 0)
    assert s1.produced == [] and a.num_computed_tokens == 8 and eng.free_blocks == 98
    s2 = eng.step()
    assert s2 is not None and s2.produced == [a]  # prompt complete: first token
    assert s2.shape.prefill_tokens == 2 and s2.shape.prefill_cached == 8
    assert s2.shape.prefill_attn == pytest.approx(2 * (8 + 1.5))
    assert a.first_token_time == pytest.approx(0.020) and eng.free_blocks == 97  # ceil(10/4) = 3 blocks
    s3 = eng.step()
    assert s3 is not None and (s3.shape.decode_batch, s3.shape.decode_context) == (1, 10)
    assert a.num_output_tokens == 2 and a.num_computed_tokens == 11
    s4 = eng.step()
    assert s4 is not None and s4.finished == [a]
    assert a.finish_time == pytest.approx(0.040) and a.phase == Phase.FINISHED
    assert eng.free_blocks == 100 and not eng.has_work()
    assert eng.step() is None


def test_running_first_then_admission_into_remaining_budget() -> None:
    eng = make_engine(budget=8)
    a, b = req("a", 6, 2), req("b", 6, 2)
    eng.add(a)
    eng.add(b)
    s1 = eng.step()
    assert s1 is not None and s1.shape.prefill_tokens == 8 and s1.shape.prefill_seqs == 2
    assert (a.num_computed_tokens, b.num_computed_tokens) == (6, 2) and s1.produced == [a]
    s2 = eng.step()  # a decodes first (running order), b gets its next chunk of 4
    assert s2 is not None
    assert (s2.shape.decode_batch, s2.shape.decode_context, s2.shape.prefill_tokens) == (1, 6, 4)
    assert s2.shape.prefill_cached == 2 and s2.finished == [a] and s2.produced == [a, b]


def test_max_num_seqs_limits_admission() -> None:
    eng = make_engine(seqs=2, budget=64)
    a, b, c = req("a", 4, 2), req("b", 4, 3), req("c", 4, 1)
    for r in (a, b, c):
        eng.add(r)
    eng.step()
    assert [r.req_id for r in eng.running] == ["a", "b"] and list(eng.waiting) == [c]
    s2 = eng.step()  # a finishes at the end of this step; c is admitted only in the next one
    assert s2 is not None and s2.finished == [a] and c.num_computed_tokens == 0
    s3 = eng.step()
    assert s3 is not None and c in s3.produced and c.first_scheduled_time == pytest.approx(0.020)


def test_preemption_by_recompute_of_the_latest_admitted() -> None:
    eng = make_engine(block_size=4, blocks=4, budget=16)
    a, b = req("a", 7, 6), req("b", 7, 6)
    eng.add(a)
    eng.add(b)
    eng.step()  # both prompts: 2 blocks each, cache full
    assert eng.free_blocks == 0 and a.num_output_tokens == b.num_output_tokens == 1
    eng.step()  # computed 8: still within 2 blocks each
    s3 = eng.step()  # a needs a 3rd block: b (admitted last) is preempted and recomputed later
    assert s3 is not None and s3.preempted == [b]
    assert b.phase == Phase.WAITING and b.num_computed_tokens == 0 and b.num_output_tokens == 2
    assert b.num_preemptions == 1 and eng.num_preemptions_total == 1
    assert s3.shape.decode_batch == 1 and eng.free_blocks == 1
    # b (prompt 7 + 2 produced = 9 tokens = 3 blocks) waits until a finishes at step 6
    for _ in range(3):
        s = eng.step()
        assert s is not None and b.num_computed_tokens == 0
    assert a.phase == Phase.FINISHED and a.finish_time == pytest.approx(0.060)
    s7 = eng.step()
    assert s7 is not None and s7.shape.prefill_tokens == 9 and s7.produced == [b]
    assert b.num_output_tokens == 3 and b.first_token_time == pytest.approx(0.010)  # first token kept
    eng.run_until(1.0)
    assert b.finish_time == pytest.approx(0.100) and eng.free_blocks == 4


def test_a_request_that_preempts_itself_stops_the_step() -> None:
    eng = make_engine(block_size=4, blocks=4, budget=16)
    a, b = req("a", 6, 4), req("b", 8, 4)
    eng.add(a)
    eng.add(b)
    eng.step()  # 2 + 2 blocks: cache full
    s = eng.step()  # a decodes within its 2nd block; b needs a 3rd and is itself the latest admitted
    assert s is not None and s.preempted == [b] and s.shape.decode_batch == 1 and s.shape.prefill_tokens == 0
    assert eng.running == [a] and list(eng.waiting) == [b] and eng.free_blocks == 2


def test_blocks_match_computed_tokens_after_every_step() -> None:
    eng = make_engine(block_size=4, blocks=12, seqs=3, budget=10)
    for i in range(6):
        eng.add(req(f"r{i}", 5 + 3 * i, 4 + i))
    while eng.has_work():
        assert eng.step() is not None
        assert eng.free_blocks == eng.num_blocks_total - held_blocks(eng) >= 0
    assert eng.free_blocks == 12


def test_abort_between_schedule_and_complete_frees_scheduled_blocks() -> None:
    eng = make_engine(block_size=4, blocks=10, budget=8)
    a = req("a", 8, 4)
    eng.add(a)
    plan = eng.schedule()
    assert plan is not None and eng.free_blocks == 8
    assert eng.abort("a") is a and eng.free_blocks == 10 and a.phase == Phase.FINISHED
    res = eng.complete(plan, duration=0.5)
    assert res.produced == [] and eng.now == pytest.approx(0.5) and eng.free_blocks == 10
    assert eng.abort("a") is None


def test_complete_uses_the_given_duration_and_rejects_a_foreign_plan() -> None:
    eng = make_engine()
    eng.add(req("a", 4, 2))
    plan = eng.schedule()
    assert plan is not None
    with pytest.raises(EngineError):
        eng.schedule()
    eng.complete(plan, duration=0.25)
    assert eng.now == pytest.approx(0.25)
    with pytest.raises(EngineError):
        eng.complete(plan)


def test_requests_that_can_never_run_are_refused() -> None:
    eng = make_engine(block_size=4, blocks=3, max_len=20)
    with pytest.raises(EngineError, match="max_model_len"):
        eng.add(req("long", 15, 6))
    with pytest.raises(EngineError, match="KV blocks"):
        eng.add(req("big", 12, 2))  # 13 tokens of KV need 4 blocks
    with pytest.raises(EngineError):
        eng.add(req("empty", 0, 2))


@pytest.mark.parametrize("key", ["block_size", "num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens"])
def test_bad_configs_name_the_key(key: str) -> None:
    from blockctl.engine.core import Engine

    with pytest.raises(ConfigError, match=key):
        Engine(EngineConfig(**{key: 0}), flat_model())


def test_run_until_on_an_idle_engine_moves_the_clock() -> None:
    eng = make_engine()
    assert eng.run_until(3.0) == [] and eng.now == 3.0
    a = req("a", 4, 3)
    eng.add(a)
    assert eng.run_until(3.015) == []  # steps starting at 3.000 and 3.010 run
    assert a.num_output_tokens == 2 and eng.now == pytest.approx(3.020)
    assert eng.run_until(10.0) == [a] and a.finish_time == pytest.approx(3.030)


def test_restore_rebuilds_running_state_and_falls_back_to_preempted() -> None:
    eng = make_engine(block_size=4, blocks=5)
    a = req("a", 10, 5)
    a.num_output_tokens, a.num_computed_tokens = 2, 11  # 3 blocks
    b = req("b", 9, 5)
    b.num_output_tokens, b.num_computed_tokens = 1, 9  # 3 blocks: does not fit in the 2 left
    eng.restore(a)
    eng.restore(b)
    assert eng.running == [a] and list(eng.waiting) == [b] and b.num_computed_tokens == 0
    assert eng.free_blocks == 2
    done = eng.run_until(10.0)
    assert {r.req_id for r in done} == {"a", "b"} and eng.free_blocks == 5
    c = req("c", 4, 2)
    c.num_output_tokens = 2
    with pytest.raises(EngineError, match="already produced"):
        eng.restore(c)
