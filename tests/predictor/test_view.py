"""The engine view built from the in-flight table and the engine's metrics (pure)."""

from __future__ import annotations

from blockctl.engine.types import EngineConfig, Phase
from blockctl.predict.observation import EngineObservation
from blockctl.predict.tracker import Tracked
from blockctl.predict.view import build_view

CFG = EngineConfig(block_size=16, num_gpu_blocks=1000, max_num_seqs=8, max_num_batched_tokens=512, max_model_len=2048)


def _streaming(rid: str, arrival: float, prompt: int, predicted: int, produced: int, last: float | None) -> Tracked:
    t = Tracked(rid, arrival, prompt, predicted, stream=True, produced=produced)
    if produced:
        t.first_token_at, t.last_token_at = arrival + 0.1, last
    return t


def _obs(at: float, running: int, waiting: int, kv: float | None = None) -> EngineObservation:
    return EngineObservation(at=at, running=running, waiting=waiting, kv_usage=kv, preemptions_total=0.0)


def test_view_splits_running_and_waiting_with_progress() -> None:
    table = [
        _streaming("a", 0.0, 100, 50, produced=20, last=9.9),
        _streaming("b", 1.0, 200, 10, produced=10, last=9.9),  # at its prediction: overrun rule
        _streaming("c", 2.0, 300, 40, produced=0, last=None),
    ]
    v = build_view(table, 10.0, CFG, None)
    assert [r.req_id for r in v.running] == ["a", "b"]
    assert [r.req_id for r in v.waiting] == ["c"]
    a, b = v.running
    assert (a.num_output_tokens, a.num_computed_tokens, a.output_tokens) == (20, 119, 50)
    assert a.phase == Phase.RUNNING
    assert b.output_tokens == 15
    assert a.arrival_time == -10.0
    assert v.kv_free_blocks == 1000 - (-(-120 // 16) + -(-210 // 16))
    assert v.waiting_prompt_blocks == -(-300 // 16)
    assert v.config == CFG


def test_excess_engine_waiting_is_taken_as_preemption_of_the_latest_admitted() -> None:
    table = [
        _streaming("a", 0.0, 100, 50, produced=20, last=4.9),
        _streaming("b", 1.0, 100, 50, produced=20, last=4.9),
        _streaming("c", 2.0, 100, 50, produced=20, last=5.2),  # produced after the scrape: not preempted
        _streaming("d", 3.0, 100, 50, produced=0, last=None),
    ]
    v = build_view(table, 5.3, CFG, _obs(5.0, running=2, waiting=2))
    assert [r.req_id for r in v.running] == ["a", "c"]
    assert [r.req_id for r in v.waiting] == ["b", "d"]
    b = v.waiting[0]
    assert (b.num_computed_tokens, b.num_output_tokens, b.phase) == (0, 20, Phase.WAITING)
    assert v.preempted == 1
    # a stale scrape is ignored
    assert build_view(table, 9.0, CFG, _obs(5.0, running=2, waiting=2)).preempted == 0


def test_hidden_kv_usage_shrinks_the_simulated_cache() -> None:
    table = [_streaming("a", 0.0, 160, 50, produced=1, last=0.9)]  # 11 blocks
    v = build_view(table, 1.0, CFG, _obs(0.95, running=1, waiting=0, kv=0.5))
    assert v.kv_free_blocks == 500
    assert v.hidden_blocks == 489
    assert v.config.num_gpu_blocks == 1000 - 489
    assert build_view(table, 1.0, CFG, _obs(0.95, 1, 0, kv=0.5), last_finish_at=0.97).hidden_blocks == 0
    small = build_view(table, 1.0, CFG, _obs(0.95, running=1, waiting=0, kv=0.05))
    assert small.hidden_blocks == 0 and small.config.num_gpu_blocks == 1000  # within tolerance
    assert small.kv_free_blocks == 950


def test_requests_that_cannot_fit_are_left_out() -> None:
    table = [_streaming("huge", 0.0, 4000, 10, produced=0, last=None)]
    v = build_view(table, 1.0, CFG, None)
    assert v.running == [] and v.waiting == []


def test_the_engine_reported_cache_size_wins() -> None:
    obs = EngineObservation(at=0.0, running=0, waiting=0, kv_usage=0.0, preemptions_total=0.0, num_gpu_blocks=300)
    v = build_view([], 100.0, CFG, obs)  # even when the scrape is old: the size does not change
    assert v.kv_total_blocks == v.config.num_gpu_blocks == 300
