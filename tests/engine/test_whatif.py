"""What-if predictions: exact on a hand-checkable instance, pure, and ordered by load."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockctl.engine.decodegroup import simulate
from blockctl.engine.fit import row_shape
from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.engine.types import EngineConfig, Phase, Request, StepShape
from blockctl.engine.whatif import Forecaster, predict, predict_exact, restore_state
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
    with pytest.raises(EngineError):
        predict(CFG, PROFILE.model, [], [], Request("n", 50, 0))


def _queued(waiting: list[tuple[int, int, int, int]], new: tuple[int, int, int]) -> tuple[list[Request], Request]:
    """The drawn waiting requests and new one; ``prefix_hit``: the part of a prompt the instance's cache holds
    (0, a quarter, ..., all of it)."""
    wait = [Request(f"w{i}", p, o + extra, num_output_tokens=o, prefix_hit=p * k // 4)
            for i, (p, o, extra, k) in enumerate(waiting)]
    return wait, Request("new", new[0], new[1], prefix_hit=new[0] * new[2] // 4)


def _in_prefill(run: list[Request], prefill_last: int) -> None:
    """With ``prefill_last`` >= 0, the last admitted running request is still in its (chunked) prefill."""
    if run and prefill_last >= 0:
        last = run[-1]
        last.num_output_tokens = 0
        last.num_computed_tokens = min(prefill_last, last.prompt_tokens - 1)


_states = st.lists(st.tuples(st.integers(1, 300), st.integers(0, 120), st.integers(1, 150)), max_size=24)


@settings(max_examples=150, deadline=None)
@given(
    running=_states,
    waiting=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 5), st.integers(1, 150), st.integers(0, 4)),
                     max_size=12),
    new=st.tuples(st.integers(1, 300), st.integers(1, 150), st.integers(0, 4)),
    block_size=st.sampled_from([1, 4, 16]),
    blocks=st.integers(30, 400),
    seqs=st.integers(1, 32),
    budget=st.integers(32, 512),
    prefill_last=st.integers(-1, 40),
)
def test_decode_group_fast_path_equals_the_exact_engine(
    running: list[tuple[int, int, int]], waiting: list[tuple[int, int, int, int]], new: tuple[int, int, int],
    block_size: int, blocks: int, seqs: int, budget: int, prefill_last: int,
) -> None:
    cfg = EngineConfig(block_size=block_size, num_gpu_blocks=blocks, max_num_seqs=seqs,
                       max_num_batched_tokens=budget, max_model_len=100_000)
    run = [Request(f"r{i}", p, o + extra, num_computed_tokens=p + o - 1 if o else 0, num_output_tokens=o,
                   phase=Phase.RUNNING)
           for i, (p, o, extra) in enumerate(running)]
    _in_prefill(run, prefill_last)
    wait, target = _queued(waiting, new)
    def fits(r: Request) -> bool:
        return -(-(r.prompt_tokens + r.output_tokens - 1) // block_size) <= blocks

    if not all(fits(r) for r in [*run, *wait, target]):
        with pytest.raises(EngineError):
            predict_exact(cfg, PROFILE.model, run, wait, target)
        return
    exact = predict_exact(cfg, PROFILE.model, run, wait, target)
    # the simulator's Forecaster (state read once), under a caching config too: hits come from the requests
    caching = dataclasses.replace(cfg, enable_prefix_caching=True)
    assert Forecaster(caching, PROFILE.model, run, wait).predict(target) == predict(cfg, PROFILE.model, run, wait,
                                                                                     target)
    fast = simulate(cfg, PROFILE.model, run, wait, target)
    if fast is None:  # states the group cannot express: the exact path answers through predict()
        assert predict(cfg, PROFILE.model, run, wait, target) == exact
        return
    assert fast.ttft_s == pytest.approx(exact.ttft_s, rel=1e-9)
    assert fast.e2e_s == pytest.approx(exact.e2e_s, rel=1e-9)
    assert fast.queue_s == pytest.approx(exact.queue_s, rel=1e-9, abs=1e-12)
    assert (fast.running, fast.waiting, fast.kv_free_blocks) == (exact.running, exact.waiting,
                                                                  exact.kv_free_blocks)


def test_typical_agent_states_stay_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """48 running + 32 waiting with ShareGPT-like lengths never needs the exact engine (the speed guarantee)."""
    import blockctl.engine.decodegroup as dg
    from blockctl.engine.benchmark import decoding_state, sample_request

    class NoEngine:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the decode group handed over to the exact engine")

    monkeypatch.setattr(dg, "Engine", NoEngine)
    rng = random.Random(11)
    for i in range(30):
        running, waiting = decoding_state(rng, 48, 32)
        assert simulate(CFG, PROFILE.model, running, waiting, sample_request(rng, f"n{i}")) is not None


class _NoEngine:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the decode group handed over to the exact engine")


def _decoders(min_size: int, max_size: int) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    """Running requests as (prompt, produced ≥ 1, tokens still to come)."""
    return st.lists(st.tuples(st.integers(1, 200), st.integers(1, 80), st.integers(1, 120)), min_size=min_size,
                    max_size=max_size)


def _waiters(max_size: int) -> st.SearchStrategy[list[tuple[int, int, int, int]]]:
    """Waiting requests as (prompt, produced, tokens to come, quarters of the prompt cached)."""
    return st.lists(st.tuples(st.integers(1, 200), st.integers(0, 3), st.integers(1, 120), st.integers(0, 4)),
                    max_size=max_size)


_NEW = st.tuples(st.integers(1, 200), st.integers(1, 120), st.integers(0, 4))


def _decoding(running: list[tuple[int, int, int]]) -> list[Request]:
    return [Request(f"r{i}", p, o + extra, num_computed_tokens=p + o - 1, num_output_tokens=o, phase=Phase.RUNNING)
            for i, (p, o, extra) in enumerate(running)]


def _held_and_longest(run: list[Request], wait: list[Request], target: Request, block_size: int) -> tuple[int, int]:
    """KV blocks the running requests hold now, and the most blocks any one request will need."""
    held = sum(-(-r.num_computed_tokens // block_size) for r in run)
    longest = max(-(-(r.prompt_tokens + r.output_tokens - 1) // block_size) for r in [*run, *wait, target])
    return held, longest


def _exact_preemptions(cfg: EngineConfig, run: list[Request], wait: list[Request], target: Request) -> int:
    """How many preemptions the exact engine makes while answering (the reference's own run, replayed)."""
    eng = restore_state(cfg, PROFILE.model, run, wait)
    t = Request("t", target.prompt_tokens, target.output_tokens)
    eng.add(t)
    eng.run_until_finished(t)
    return eng.num_preemptions_total


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    running=_decoders(1, 20),
    waiting=_waiters(10),
    new=_NEW,
    block_size=st.sampled_from([1, 4, 16]),
    slack=st.integers(0, 40),
    seqs=st.integers(4, 24),
    budget=st.integers(24, 256),
    prefill_last=st.integers(-1, 40),
)
def test_the_decode_group_preempts_like_the_engine_without_handing_over(
    monkeypatch: pytest.MonkeyPatch, running: list[tuple[int, int, int]], waiting: list[tuple[int, int, int, int]],
    new: tuple[int, int, int], block_size: int, slack: int, seqs: int, budget: int, prefill_last: int,
) -> None:
    """KV just large enough for what runs now (plus ``slack`` blocks): decoders soon run out and preempt."""
    import blockctl.engine.decodegroup as dg

    run = _decoding(running[:seqs])
    _in_prefill(run, prefill_last)
    wait, target = _queued(waiting, new)
    held, longest = _held_and_longest(run, wait, target, block_size)
    cfg = EngineConfig(block_size=block_size, num_gpu_blocks=max(held, longest) + slack, max_num_seqs=seqs,
                       max_num_batched_tokens=max(budget, seqs), max_model_len=100_000)
    exact = predict_exact(cfg, PROFILE.model, run, wait, target)
    with monkeypatch.context() as m:  # patched per example, undone before the next
        m.setattr(dg, "Engine", _NoEngine)
        fast = simulate(cfg, PROFILE.model, run, wait, target)
    assert fast is not None
    assert fast.ttft_s == pytest.approx(exact.ttft_s, rel=1e-9)
    assert fast.e2e_s == pytest.approx(exact.e2e_s, rel=1e-9)
    assert fast.queue_s == pytest.approx(exact.queue_s, rel=1e-9, abs=1e-12)


def test_tight_kv_states_do_preempt_and_stay_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property above is not vacuous: most of these 48 + 32 states preempt in the reference."""
    import blockctl.engine.decodegroup as dg
    from blockctl.engine.benchmark import decoding_state, sample_request

    rng = random.Random(13)
    preempting = 0
    for i in range(40):
        running, waiting = decoding_state(rng, 48, 32)
        held = sum(-(-r.num_computed_tokens // CFG.block_size) for r in running)
        cfg = EngineConfig(block_size=CFG.block_size, num_gpu_blocks=held + rng.randint(0, 60), max_num_seqs=48,
                           max_num_batched_tokens=512, max_model_len=CFG.max_model_len)
        new = sample_request(rng, f"n{i}")
        longest = max(-(-(r.prompt_tokens + r.output_tokens - 1) // 16) for r in [*running, *waiting, new])
        if longest > cfg.num_gpu_blocks:
            continue
        exact = predict_exact(cfg, PROFILE.model, running, waiting, new)
        preempting += _exact_preemptions(cfg, running, waiting, new) > 0
        with monkeypatch.context() as m:
            m.setattr(dg, "Engine", _NoEngine)
            fast = simulate(cfg, PROFILE.model, running, waiting, new)
        assert fast is not None and fast.e2e_s == pytest.approx(exact.e2e_s, rel=1e-9)
    assert preempting >= 20


def test_a_forecaster_answers_like_predict_for_many_new_requests_on_one_state() -> None:
    """The simulator reads a state once and asks it for every arrival until the state changes."""
    from blockctl.engine.benchmark import decoding_state, sample_request

    rng = random.Random(17)
    running, waiting = decoding_state(rng, 48, 32)
    held = sum(-(-r.num_computed_tokens // CFG.block_size) for r in running)
    for blocks in (CFG.num_gpu_blocks, held + 20):  # roomy, then tight (the what-ifs preempt)
        cfg = EngineConfig(block_size=CFG.block_size, num_gpu_blocks=blocks, max_num_seqs=48,
                           max_num_batched_tokens=512, max_model_len=CFG.max_model_len)
        whatif = Forecaster(cfg, PROFILE.model, running, waiting)
        news = [sample_request(rng, f"n{i}") for i in range(12)]
        news = [n for n in news if -(-(n.prompt_tokens + n.output_tokens - 1) // 16) <= blocks]
        first = [whatif.predict(n) for n in news]
        assert first == [predict(cfg, PROFILE.model, running, waiting, n) for n in news]
        assert [whatif.predict(n) for n in news] == first  # asking again: the shared columns were not mutated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    running=_decoders(2, 30),
    waiting=_waiters(8),
    new=_NEW,
    block_size=st.sampled_from([1, 4, 16]),
    short=st.integers(1, 60),
    seqs=st.integers(2, 24),
)
def test_a_view_holding_more_than_the_engine_is_restored_as_the_engine_would(
    monkeypatch: pytest.MonkeyPatch, running: list[tuple[int, int, int]], waiting: list[tuple[int, int, int, int]],
    new: tuple[int, int, int], block_size: int, short: int, seqs: int,
) -> None:
    """An agent's view may hold more running requests than the engine can (it cannot see preemptions): more
    blocks than the cache, more sequences than its seats. The decode group restores the overflow as preempted,
    as Engine.restore does, instead of handing the whole what-if to the exact engine."""
    import blockctl.engine.decodegroup as dg

    run = _decoding(running)
    wait, target = _queued(waiting, new)
    held, longest = _held_and_longest(run, wait, target, block_size)
    cfg = EngineConfig(block_size=block_size, num_gpu_blocks=max(longest, held - short), max_num_seqs=seqs,
                       max_num_batched_tokens=max(256, seqs), max_model_len=100_000)
    exact = predict_exact(cfg, PROFILE.model, run, wait, target)
    with monkeypatch.context() as m:
        m.setattr(dg, "Engine", _NoEngine)
        fast = simulate(cfg, PROFILE.model, run, wait, target)
    assert fast is not None
    assert fast.ttft_s == pytest.approx(exact.ttft_s, rel=1e-9)
    assert fast.e2e_s == pytest.approx(exact.e2e_s, rel=1e-9)
    assert fast.queue_s == pytest.approx(exact.queue_s, rel=1e-9, abs=1e-12)
    assert (fast.running, fast.waiting, fast.kv_free_blocks) == (exact.running, exact.waiting, exact.kv_free_blocks)
