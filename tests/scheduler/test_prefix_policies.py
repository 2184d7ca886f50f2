"""The prefix-aware baselines: SGLang's cache-aware, llm-d's prefix-load, Dynamo's kv-cost."""

from __future__ import annotations

import random

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
