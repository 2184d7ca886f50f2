"""The prefix-aware baselines: SGLang's cache-aware, llm-d's prefix-load, Dynamo's kv-cost."""

from __future__ import annotations

import random

from blockctl.engine.profile import load_profile
from blockctl.engine.types import Prediction
from blockctl.scheduler.policies import InstanceView, RouteRequest, make_policy


def _view(name: str, *, outstanding: int = 0, waiting: int = 0, free: int = 1000, hit: int = 0) -> InstanceView:
    return InstanceView(name, None, outstanding, waiting, outstanding, free, 1000, 0, 0, prefix_hit_tokens=hit,
                        block_size=16)


REQ = RouteRequest(prompt_tokens=1000, predicted_output_tokens=100)


def _choose(policy: str, *views: InstanceView) -> str:
    return make_policy(policy).choose(REQ, list(views), random.Random(0))


def test_cache_aware_follows_a_match_over_its_threshold_while_the_load_is_balanced() -> None:
    assert _choose("cache-aware", _view("a", outstanding=10, hit=400), _view("b", outstanding=0)) == "a"
    # 29% of the prompt is under the 0.3 threshold: least loaded.
    assert _choose("cache-aware", _view("a", outstanding=10, hit=290), _view("b", outstanding=0)) == "b"


def test_cache_aware_balances_load_once_both_imbalance_thresholds_are_passed() -> None:
    # max - min = 65 > 64 and 80 > 1.5 * 15: imbalanced, the match is ignored.
    assert _choose("cache-aware", _view("a", outstanding=80, hit=990), _view("b", outstanding=15)) == "b"
    # max - min = 66 > 64 but 200 <= 1.5 * 134: balanced, the match wins.
    assert _choose("cache-aware", _view("a", outstanding=200, hit=990), _view("b", outstanding=134)) == "a"


def test_prefix_load_weighs_prefix_three_to_queue_two_and_kv_two() -> None:
    # a: prefix 0.9*3 = 2.7, queue 0, kv 0.5*2 = 1 -> 3.7; b: prefix 0, queue 2, kv 2*0.9 -> 3.8
    assert _choose("prefix-load", _view("a", waiting=4, free=500, hit=900), _view("b", waiting=0, free=900)) == "b"
    assert _choose("prefix-load", _view("a", waiting=4, free=600, hit=900), _view("b", waiting=0, free=900)) == "a"


def test_kv_cost_adds_uncached_prefill_blocks_to_the_blocks_in_use() -> None:
    # a: 63 uncached prefill blocks + 100 in use = 163; b: 1 + 160 = 161, then 1 + 170 = 171
    a = _view("a", free=900)
    b = _view("b", free=840, hit=992)
    assert _choose("kv-cost", a, b) == "b"
    assert _choose("kv-cost", a, _view("b", free=830, hit=992)) == "a"


def _predicted(name: str, e2e: float, *, running: int, waiting: int = 0, hit: int = 0,
               prefill_s: float = 0.0) -> InstanceView:
    p = Prediction(ttft_s=e2e / 10, e2e_s=e2e, queue_s=0.0, running=running, waiting=waiting, kv_free_blocks=500,
                   prefill_s=prefill_s)
    return InstanceView(name, p, running, waiting, running + waiting, 500, 1000, 0, 0, prefix_hit_tokens=hit,
                        block_size=16)


def test_block_counts_what_a_cache_miss_costs_the_other_requests_on_the_instance() -> None:
    # b holds 900 of the 1000 prompt tokens; a would prefill all 1000 (0.2 s beside its decodes), so each of
    # a's 20 other requests waits 0.2 s * 900/1000 = 0.18 s more: 3.6 s in all, against a 0.5 s faster reply.
    a = _predicted("a", 2.0, running=20, prefill_s=0.2)
    b = _predicted("b", 2.5, running=20, hit=900, prefill_s=0.02)
    assert _choose("block", a, b) == "b"
    # An idle instance has nobody to delay: its faster reply wins.
    assert _choose("block", _predicted("a", 2.0, running=0, prefill_s=0.2), b) == "a"
    # With no prefix anywhere, block is the least predicted E2E, as before.
    assert _choose("block", _predicted("a", 2.0, running=20, prefill_s=0.2),
                   _predicted("b", 2.5, running=20, prefill_s=0.2)) == "a"
    # block-ttft weighs only the new request's first token.
    assert _choose("block-ttft", a, b) == "a"


def test_prefill_seconds_prices_only_the_uncached_tokens_in_budget_sized_chunks() -> None:
    model = load_profile("h100/llama-2-7b").model
    full = model.prefill_seconds(2048, 0, 32, 512)
    assert full > model.prefill_seconds(2048, 1024, 32, 512) > model.prefill_seconds(2048, 2032, 32, 512) > 0.0
    assert model.prefill_seconds(2048, 2048, 32, 512) == 0.0
    # alone on the instance, the prompt is one 2048-token step: more than its share beside decodes
    assert model.prefill_seconds(2048, 0, 0, 2048) > full
