"""vLLM V1's prefix cache in the engine model: hits, counters, eviction order, preemption, pricing."""

from __future__ import annotations

import dataclasses
import random

import pytest

from blockctl.engine.core import Engine
from blockctl.engine.decodegroup import simulate
from blockctl.engine.prefixcache import PrefixCache, block_hashes
from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.engine.types import EngineConfig, Request
from blockctl.engine.whatif import Forecaster, predict_exact
from tests.engine.helpers import flat_model

BS = 4


def _engine(blocks: int = 100, *, seqs: int = 4, budget: int = 64) -> Engine:
    cfg = EngineConfig(block_size=BS, num_gpu_blocks=blocks, max_num_seqs=seqs, max_num_batched_tokens=budget,
                       max_model_len=4096, enable_prefix_caching=True)
    return Engine(cfg, flat_model())


def _req(name: str, tokens: list[int], out: int = 2) -> Request:
    return Request(name, len(tokens), out, block_hashes=block_hashes(tokens, BS))


def _run(eng: Engine, r: Request) -> tuple[int, int]:
    """Run ``r`` alone to completion; the (queries, hits) increments its admission made."""
    assert eng.cache is not None
    q0, h0 = eng.cache.queries, eng.cache.hits
    eng.add(r)
    eng.run_until_finished(r)
    return eng.cache.queries - q0, eng.cache.hits - h0


def test_block_hashes_chain_and_cover_full_blocks_only() -> None:
    a = block_hashes(list(range(10)), 4)
    b = block_hashes([*range(8), 99, 98, 97, 96], 4)
    assert len(a) == 2 and a == b[:2] and len(b) == 3
    assert block_hashes([9, 9, 9, 9, 1, 2, 3, 4], 4)[1] != block_hashes([8, 8, 8, 8, 1, 2, 3, 4], 4)[1]
    assert block_hashes([1, 2, 3], 4) == []


def test_a_shared_prefix_hits_its_full_blocks_and_the_last_token_is_always_computed() -> None:
    eng = _engine()
    assert _run(eng, _req("a", list(range(14)))) == (14, 0)
    # 10 shared tokens = 2 full blocks of 4 (the third block differs).
    assert _run(eng, _req("b", [*range(10), 50, 51, 52])) == (13, 8)
    # The same 12-token prompt: 3 blocks cached, but the last token must be computed, so only 2 hit.
    assert _run(eng, _req("c", list(range(12)))) == (12, 8)
    assert _run(eng, _req("d", list(range(13)))) == (13, 12)


def test_the_first_chunk_starts_after_the_hit_and_is_priced_with_it() -> None:
    eng = _engine()
    _run(eng, _req("a", list(range(20))))
    r = _req("b", [*range(16), 7, 7, 7])
    eng.add(r)
    res = eng.step()
    assert res is not None
    assert (res.shape.prefill_tokens, res.shape.prefill_cached) == (3, 16)
    assert res.shape.prefill_attn == pytest.approx(3 * (16 + 2))


def test_unhashed_blocks_are_reused_before_any_cached_block_is_evicted() -> None:
    eng = _engine(blocks=8)
    _run(eng, _req("a", list(range(12)), out=1))  # 3 full blocks cached, all 8 blocks free again
    assert eng.free_blocks == 8 and eng.cache is not None and eng.cache.cached_blocks == 3
    _run(eng, _req("b", list(range(100, 117)), out=1))  # 5 blocks (4 full): takes the 5 never-hashed blocks
    assert _run(eng, _req("c", list(range(13)))) == (13, 12)


def test_eviction_takes_the_least_recently_freed_block_first_and_a_request_s_tail_before_its_head() -> None:
    eng = _engine(blocks=6)
    _run(eng, _req("a", list(range(12)), out=1))  # a's 3 blocks cached; queue: 3 blank, a3, a2, a1
    _run(eng, _req("b", list(range(200, 212)), out=1))  # takes the 3 blank; queue: a3 a2 a1 b3 b2 b1
    # 8 new tokens: 2 blocks off the head: a's last two blocks (tail first) go, a's first block stays.
    _run(eng, _req("c", list(range(300, 308)), out=1))
    cache = eng.cache
    assert cache is not None
    assert len(cache.lookup(_req("a2", list(range(13))))[0]) == 1
    # b was freed after a, so all of b survived.
    assert len(cache.lookup(_req("b2", list(range(200, 213))))[0]) == 3
    # A hit takes a1 out of the queue; its 3 new blocks then come off the head: b's, tail first.
    assert _run(eng, _req("a2", list(range(13)))) == (13, 4)
    assert len(cache.lookup(_req("b3", list(range(200, 213))))[0]) == 0


def test_a_hit_on_a_free_block_costs_a_free_block_and_a_shared_one_does_not() -> None:
    cache = PrefixCache(10, BS)
    a = _req("a", list(range(8)))
    cache.admit(a, [], 8)
    assert cache.free == 8
    b = _req("b", list(range(9)))
    hit, evictable = cache.lookup(b)
    assert len(hit) == 2 and evictable == 0  # held by a: shared, no free block taken
    cache.release(a, 2)
    cache.forget(a)
    hit, evictable = cache.lookup(b)
    assert len(hit) == 2 and evictable == 2 and cache.free == 10


def test_preemption_frees_like_a_finish_and_the_request_finds_its_own_blocks_again_uncounted() -> None:
    eng = _engine(blocks=5, seqs=2, budget=64)
    first = Request("p", 8, 8, block_hashes=block_hashes(list(range(8)), BS))
    second = Request("q", 8, 8, block_hashes=block_hashes(list(range(100, 108)), BS))
    eng.add(first)
    eng.add(second)
    cache = eng.cache
    assert cache is not None
    eng.run_until_finished(first)
    eng.run_until_finished(second)
    assert eng.num_preemptions_total >= 1 and second.num_preemptions >= 1
    # Each counted once, at its first admission; re-admissions after preemption go uncounted.
    assert (cache.queries, cache.hits) == (16, 0)
    assert eng.free_blocks == 5


def test_with_caching_on_and_nothing_shared_the_schedule_is_the_same_as_with_it_off() -> None:
    rng = random.Random(3)
    reqs = [(f"r{i}", rng.randint(1, 60), rng.randint(1, 40), i * 0.003) for i in range(60)]
    cfg = EngineConfig(block_size=BS, num_gpu_blocks=2000, max_num_seqs=8, max_num_batched_tokens=32)
    times = []
    for on in (False, True):
        eng = Engine(dataclasses.replace(cfg, enable_prefix_caching=on), flat_model(per_ctx_ktoken_ms=1.0))
        rs = [Request(n, p, o, arrival_time=t) for n, p, o, t in reqs]
        for r in rs:
            eng.run_until(r.arrival_time)
            eng.add(r)
        eng.run_until(float("inf"))
        times.append([(r.first_token_time, r.finish_time) for r in rs])
    assert times[0] == times[1]


def test_the_what_if_fast_path_agrees_with_the_exact_engine_when_requests_carry_hits() -> None:
    prof = load_profile(DEFAULT_PROFILE)
    cfg, model = prof.engine_defaults(), prof.model
    rng = random.Random(7)
    for _ in range(40):
        running = []
        for i in range(rng.randint(0, 30)):
            p, o = rng.randint(20, 900), rng.randint(1, 200)
            running.append(Request(f"r{i}", p, o + rng.randint(1, 200), num_computed_tokens=p + o - 1,
                                   num_output_tokens=o))
        waiting = []
        for i in range(rng.randint(0, 20)):
            p = rng.randint(20, 1500)
            waiting.append(Request(f"w{i}", p, rng.randint(1, 300), prefix_hit=rng.choice([0, p // 2, p])))
        p = rng.randint(20, 2000)
        new = Request("new", p, rng.randint(1, 300), prefix_hit=rng.choice([0, p // 16 * 16, p]))
        fast = simulate(cfg, model, running, waiting, new)
        exact = predict_exact(cfg, model, running, waiting, new)
        assert fast is not None
        assert fast.ttft_s == pytest.approx(exact.ttft_s, rel=1e-9)
        assert fast.e2e_s == pytest.approx(exact.e2e_s, rel=1e-9)


def test_a_cached_prefix_shortens_the_predicted_ttft() -> None:
    prof = load_profile(DEFAULT_PROFILE)
    cfg, model = prof.engine_defaults(), prof.model
    cold = predict_exact(cfg, model, [], [], Request("n", 3000, 10))
    warm = predict_exact(cfg, model, [], [], Request("n", 3000, 10, prefix_hit=2992))
    assert warm.ttft_s < 0.5 * cold.ttft_s


def test_the_what_if_takes_hits_from_requests_even_under_a_caching_config() -> None:
    prof = load_profile(DEFAULT_PROFILE)
    plain = prof.engine_defaults()
    caching = dataclasses.replace(plain, enable_prefix_caching=True)
    new = Request("n", 3000, 10, prefix_hit=2992)
    assert predict_exact(caching, prof.model, [], [], new) == predict_exact(plain, prof.model, [], [], new)


def test_shared_counts_the_references_beyond_each_blocks_first() -> None:
    cache = PrefixCache(20, BS)
    a, b, c = (_req(n, [*range(8), *tail]) for n, tail in (("a", [50]), ("b", [60]), ("c", [70])))
    cache.admit(a, [], 9)
    for r in (b, c):
        hit, _ = cache.lookup(r)
        cache.admit(r, hit, 1)
    assert cache.shared == 4  # two shared blocks, each held by three requests
    assert cache.probe(9, block_hashes([*range(8), 99], BS)) == (8, 2)  # both hit blocks held: shared
    for r in (a, b):
        cache.release(r, 3)
        cache.forget(r)
    assert cache.shared == 0 and cache.probe(9, block_hashes([*range(8), 99], BS)) == (8, 2)
    cache.release(c, 3)
    cache.forget(c)
    assert cache.shared == 0 and cache.probe(9, block_hashes([*range(8), 99], BS)) == (8, 0)  # free: taken


def test_a_new_request_sharing_a_running_requests_prefix_is_predicted_as_the_engine_runs_it() -> None:
    """The engine holds a running request's 400-token prompt once; a new request with the same prompt
    shares it and needs only its own blocks. The what-if, counting each request's blocks apart, must be told
    (``extra_blocks``) or it predicts a wait for the running request to finish."""
    prompt = list(range(400))
    eng = _engine(blocks=120, seqs=4, budget=512)  # 100 blocks of prompt + room for 20 more
    first = Request("a", 401, 60, block_hashes=block_hashes([*prompt, 1], BS))
    eng.add(first)
    while first.num_output_tokens < 5:
        eng.step()
    running = [Request("a", 401, 60, num_computed_tokens=first.num_computed_tokens,
                       num_output_tokens=first.num_output_tokens)]
    cache = eng.cache
    assert cache is not None
    hit, held = cache.probe(401, block_hashes([*prompt, 2], BS))
    assert (hit, held) == (400, 100)
    new = Request("n", 401, 10, prefix_hit=hit)
    cfg = dataclasses.replace(eng.config, enable_prefix_caching=False)
    blind = Forecaster(cfg, eng.model, running, []).predict(new)
    told = Forecaster(cfg, eng.model, running, []).predict(new, held)
    exact = predict_exact(dataclasses.replace(cfg, num_gpu_blocks=cfg.num_gpu_blocks + held), eng.model, running,
                          [], new)
    start = eng.now
    second = Request("n", 401, 10, arrival_time=start, block_hashes=block_hashes([*prompt, 2], BS))
    eng.add(second)
    eng.run_until_finished(second)
    assert second.first_token_time is not None and second.finish_time is not None
    assert blind.queue_s > 0.0  # waits for "a" to free its blocks, which the engine never needed
    assert told.queue_s == 0.0 and told.e2e_s == pytest.approx(exact.e2e_s, rel=1e-9)
    assert told.ttft_s == pytest.approx(second.first_token_time - start, rel=1e-6)
    assert told.e2e_s == pytest.approx(second.finish_time - start, rel=1e-6)
