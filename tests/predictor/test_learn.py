"""Online learning: robust RLS, the step learner fed by simulated token streams, the first-token learner."""

from __future__ import annotations

import dataclasses
import random
import sys

import pytest

from blockctl.engine.steptime import StepTimeModel, StepTimeParams
from blockctl.engine.types import EngineConfig, Request, StepShape
from blockctl.predict.tracker import Tracked
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.learn import TtftLearner
from blockctl_agents.predictor.metrics import render_metrics
from blockctl_agents.predictor.rls import RobustRls
from blockctl_agents.predictor.settings import AgentSettings
from tests.predictor.helpers import PROFILE

CONFIG = EngineConfig(max_num_seqs=8, max_model_len=512, num_gpu_blocks=10_000)
# A CPU-like engine: ~2 ms a step, flat in the batch; the GPU profile says otherwise (the wrong start).
TRUTH = StepTimeModel(
    StepTimeParams(const_ms=0.0, linear_mem_ms=0.0, linear_ms_per_token=0.01, roofline_p=1.0,
                   prefill_attn_ms_per_mpair=20.0, cached_ms_per_ktoken=0.0, decode_attn_ms_per_ktoken=0.3,
                   lm_head_ms_per_krow=150.0, mixed_step_ms=0.5),
    overhead_ms=2.0,
)


def test_rls_recovers_coefficients_despite_outliers_and_stays_in_bounds() -> None:
    rng = random.Random(0)
    rls = RobustRls([10.0, 0.0], [10.0, 1.0], drift=0.01, lower=[0.0, 0.0], upper=[100.0, 10.0])
    for _ in range(3000):
        b = rng.randint(1, 8)
        y = (3.0 + 0.5 * b) * (1 + rng.gauss(0, 0.05))
        if rng.random() < 0.05:
            y *= 8  # a host stall
        rls.update([1.0, b], y, floor=0.1)
        assert all(v >= 0 for v in rls.theta)
    assert abs(rls.theta[0] - 3.0) < 0.4 and abs(rls.theta[1] - 0.5) < 0.08, rls.theta
    assert rls.clipped > 0
    mape = rls.recent_mape()
    assert mape is not None and mape < 50


def _simulate(core: AgentCore, rng: random.Random, steps: int, truth: StepTimeModel | None = None,
              cached: float = 0.0) -> None:
    """Run a simulated engine with ``truth``'s step times: 1-8 streams, arrivals prefilled with the decodes, every
    step's tokens delivered to the agent at its end (random order, sub-ms jitter). ``cached``: the share of each
    prompt the instance's prefix cache holds (whole blocks; the agent's shadow knows it), not prefilled."""
    now, next_id = 1000.0, 0
    active: dict[str, int] = {}  # id -> tokens left
    waiting: list[Tracked] = []
    target = 4
    for i in range(steps):
        if i % 40 == 0:  # requests come and go: the batch changes every few dozen steps
            target = rng.randint(1, 8)
        while len(active) + len(waiting) < target:
            t = Tracked(f"q{next_id}", now, rng.randint(16, 200), 64, stream=True)
            next_id += 1
            core.admit(t, now, dispatched=(0.01, 0.1))
            hit = int(t.prompt_tokens * cached) // 16 * 16
            if hit:
                t.view_req = Request(t.req_id, t.prompt_tokens, 64, prefix_hit=hit)
            waiting.append(t)
        new = waiting[:]
        waiting.clear()
        decoding = list(active)
        ctx = sum(core.tracker.inflight[r].prompt_tokens + core.tracker.inflight[r].produced for r in decoding)
        hits = [t.view_req.prefix_hit if t.view_req is not None else 0 for t in new]
        shape = StepShape(
            prefill_tokens=sum(t.prompt_tokens - h for t, h in zip(new, hits, strict=True)), prefill_seqs=len(new),
            prefill_attn=sum((t.prompt_tokens - h) * (h + (t.prompt_tokens - h + 1) / 2)
                             for t, h in zip(new, hits, strict=True)),
            prefill_cached=sum(hits), decode_batch=len(decoding), decode_context=ctx,
        )
        now += (truth or TRUTH).step_seconds(shape)
        for t in new:
            active[t.req_id] = rng.randint(20, 120)
        order = decoding + [t.req_id for t in new]
        rng.shuffle(order)
        for r in order:
            core.token(r, now + rng.uniform(0, 1e-4))
            active[r] -= 1
            if active[r] == 0:
                del active[r]
                core.complete(r, now + 2e-4, ok=True)


def test_agent_learns_the_engine_from_a_wrong_profile() -> None:
    settings = AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG)
    core = AgentCore(settings, PROFILE.model)  # an H100 profile in front of a "CPU" engine
    before = {b: core.model.step_seconds(StepShape(decode_batch=b, decode_context=100 * b)) for b in (1, 4, 8)}
    _simulate(core, random.Random(1), 3000)
    learned = core.learning_state()
    assert learned is not None and learned["steps"]["steps_learned"] > 2000
    for b in (1, 4, 8):
        shape = StepShape(decode_batch=b, decode_context=100 * b)
        truth = TRUTH.step_seconds(shape)
        assert abs(core.model.step_seconds(shape) / truth - 1) < 0.1, (b, core.model.step_seconds(shape), truth)
        assert abs(before[b] / truth - 1) > 0.3  # it did start wrong
    mixed = StepShape(prefill_tokens=150, prefill_seqs=1, prefill_attn=150 * 151 / 2, decode_batch=4,
                      decode_context=400)
    assert abs(core.model.step_seconds(mixed) / TRUTH.step_seconds(mixed) - 1) < 0.2
    assert learned["steps"]["recent_window_mape_pct"] < 5 and learned["steps"]["using"] == "learned"
    metrics = render_metrics(core, 0.0)
    assert 'blockctl_agent_learned_coefficient{instance="i",name="step_const_ms"}' in metrics
    assert "blockctl_agent_learned_steps_total" in metrics


# A CPU vLLM as `profile engine` measured one (issue 14): weight-bound decodes (a batch of 8 costs little more than
# 1), compute-bound prefill tokens (~0.9 ms each) -- the roofline's knee, which no straight line can draw.
KNEE = StepTimeModel(
    StepTimeParams(const_ms=12.8, linear_mem_ms=4.9, linear_ms_per_token=0.88, roofline_p=20.0,
                   prefill_attn_ms_per_mpair=915.0, cached_ms_per_ktoken=0.0, decode_attn_ms_per_ktoken=3.5,
                   lm_head_ms_per_krow=0.0, mixed_step_ms=1.5),
    overhead_ms=0.0,
)


def test_the_learner_keeps_the_profiles_knee_where_a_line_cannot_fit_the_engine() -> None:
    slow = dataclasses.replace(KNEE.params, const_ms=16.0, linear_mem_ms=6.0, linear_ms_per_token=1.1)
    settings = AgentSettings("http://127.0.0.1:1", "i", "engine", CONFIG)
    core = AgentCore(settings, StepTimeModel(slow, overhead_ms=0.0))  # the right shape on a slower host
    _simulate(core, random.Random(3), 3000, truth=KNEE)
    learned = core.learning_state()
    assert learned is not None and learned["steps"]["using"] == "learned"
    assert learned["steps"]["form"] == "roofline", learned["steps"]["forms_recent_window_mape_pct"]
    line = core.step_learner.forms[0].model()
    for b in (1, 8):
        shape = StepShape(decode_batch=b, decode_context=100 * b)
        truth = KNEE.step_seconds(shape)
        assert abs(core.model.step_seconds(shape) / truth - 1) < 0.05, (b, core.model.step_seconds(shape), truth)
    # the line, fitted to the same steps, prices decode rows by the prefill tokens' slope: further off
    errors = {name: [abs(m.step_seconds(StepShape(decode_batch=b, decode_context=100 * b))
                         / KNEE.step_seconds(StepShape(decode_batch=b, decode_context=100 * b)) - 1) for b in (1, 8)]
              for name, m in (("line", line), ("roofline", core.model))}
    assert max(errors["line"]) > 2 * max(errors["roofline"]), errors
    prefill = StepShape(prefill_tokens=150, prefill_seqs=1, prefill_attn=150 * 151 / 2, decode_batch=4,
                        decode_context=400)
    assert abs(core.model.step_seconds(prefill) / KNEE.step_seconds(prefill) - 1) < 0.05


def test_without_learning_the_profile_stays() -> None:
    settings = AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG, learn=False)
    core = AgentCore(settings, PROFILE.model)
    _simulate(core, random.Random(2), 300)
    assert core.model is PROFILE.model and core.learning_state() is None
    assert core.state(0.0)["learning"] is None


def test_steps_are_not_learned_while_a_non_streaming_request_hides_its_progress() -> None:
    core = AgentCore(AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG), PROFILE.model)
    core.admit(Tracked("hidden", 999.0, 50, 50, stream=False), 999.0, dispatched=(0.01, 0.1))
    _simulate(core, random.Random(3), 300)
    assert core.step_learner is not None
    assert all(f.rls.updates == 0 for f in core.step_learner.forms) and core.step_learner.skipped > 0


def test_first_token_overhead_is_learned_robustly() -> None:
    rng = random.Random(4)
    learner = TtftLearner(request_overhead_ms=30.0)  # a profile that was wrong by 20 ms
    for _ in range(300):
        prompt = rng.randint(10, 400)
        residual_ms = 8.0 + 20.0 * prompt / 1e3 + rng.gauss(0, 1.0)
        if rng.random() < 0.05:
            residual_ms += 200  # a stall
        learner.observe(prompt, residual_ms / 1e3)
    assert abs(learner.overhead_s(200) - 0.012) < 0.002, learner.state()
    assert learner.overhead_s(0) >= 0


def test_a_profile_request_overhead_seeds_the_first_token_prediction() -> None:
    base = AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG)
    plain = AgentCore(base, PROFILE.model)
    seeded = AgentCore(dataclasses.replace(base, request_overhead_ms=15.0), PROFILE.model)
    a, _ = plain.predict(100, 50, 0.0)
    b, _ = seeded.predict(100, 50, 0.0)
    assert abs((b.ttft_s - a.ttft_s) - 0.015) < 1e-6


@pytest.mark.parametrize("cached", [0.0, 0.75])
def test_an_exact_profile_stays_in_use(monkeypatch: pytest.MonkeyPatch, cached: float) -> None:
    """Also when most of each prompt comes from the prefix cache: the learner must read a first token's step
    as the prefill of the uncached part only (priced as the whole prompt, the profile looked wrong and the
    learner replaced it)."""
    monkeypatch.setattr(sys.modules[__name__], "TRUTH", PROFILE.model)  # the engine is what the profile says
    core = AgentCore(AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG), PROFILE.model)
    _simulate(core, random.Random(5), 1500, cached=cached)
    learned = core.learning_state()
    assert learned is not None and learned["steps"]["updates"] > 10
    assert learned["steps"]["using"] == "profile" and core.model is PROFILE.model


def test_each_decode_is_priced_with_the_batches_it_ran_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the engine's own model, a request's decode given its steps is exact (to the tokens' jitter), every
    finished request is scored once its last step closes, and the dispatch-time guess is scored beside it."""
    monkeypatch.setattr(sys.modules[__name__], "TRUTH", PROFILE.model)
    core = AgentCore(AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG), PROFILE.model)
    _simulate(core, random.Random(6), 1500)
    errors = core.state(0.0)["errors"]
    given, decode = errors["decode_given_batches"], errors["decode"]
    assert decode["count"] == core.tracker.total_completed > 20
    assert given["count"] >= decode["count"] - 1  # the last request's last step may still be open
    assert given["mape_pct"] < 0.5 and abs(given["bias_pct"]) < 0.5, given
    assert decode["mape_pct"] > 20  # the simulation dispatches with a fixed guess of 90 ms
    assert "blockctl_agent_decode_given_batches_abs_pct_error" in render_metrics(core, 0.0)


def test_a_decode_that_ran_in_an_unreadable_step_is_not_priced() -> None:
    core = AgentCore(AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG), PROFILE.model)
    core.admit(Tracked("hidden", 999.0, 50, 50, stream=False), 999.0, dispatched=(0.01, 0.1))
    _simulate(core, random.Random(3), 300)
    errors = core.state(0.0)["errors"]
    assert errors["decode"]["count"] > 0 and errors["decode_given_batches"]["count"] == 0


def test_a_request_is_priced_once_the_step_with_its_last_token_closes() -> None:
    core = AgentCore(AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, CONFIG), PROFILE.model)
    for rid in ("a", "b"):
        core.admit(Tracked(rid, 0.0, 100, 3, stream=True), 0.0, dispatched=(0.01, 0.05))
    for end in (0.01, 0.02, 0.035):  # a prefill step, then two decode steps of both
        core.token("a", end)
        core.token("b", end + 1e-5)
    core.complete("a", 0.0351, ok=True)
    given = core.errors.decode_given_batches
    assert given.total == 0  # its last step is still open: a token of b's next step closes it
    core.token("b", 0.05)
    assert given.total == 1
    # the two decode steps as the learner read them (a finished member's context is no longer in the table)
    step = [PROFILE.model.step_seconds(StepShape(decode_batch=2, decode_context=c)) for c in (2 * 102, 103)]
    actual = 0.035 - 0.01  # a's first token to its last: the median gap of each step is a's (a's and b's agree)
    assert given.sum_abs_pct == pytest.approx(100 * abs(sum(step) - actual) / actual, rel=1e-3)
    core.complete("b", 0.0501, ok=False)
    assert core.step_learner is not None
    assert given.total == 1 and not core.step_learner.given.tracked()  # a failed request is dropped, not scored


def test_a_batch_size_the_engine_runs_off_its_curve_is_learned_apart() -> None:
    """An engine whose two-sequence steps run 4 ms slower than its curve (a kernel chosen by shape): no smooth
    form can draw that, the per-batch-size correction does (the smooth fit, pulled by the bump, leaves small
    corrections elsewhere)."""
    bumpy = dataclasses.replace(KNEE, token_ms=(0.0, 0.0, 4.0))
    settings = AgentSettings("http://127.0.0.1:1", "i", "engine", CONFIG)
    core = AgentCore(settings, KNEE)  # the curve exact: only the bump is left to learn
    _simulate(core, random.Random(7), 3000, truth=bumpy)
    learned = core.learning_state()
    assert learned is not None
    fixes = learned["steps"]["small_batch_ms"]
    assert fixes["2"] > 2 and max(fixes, key=lambda n: abs(fixes[n])) == "2", fixes
    for b in range(1, 9):
        shape = StepShape(decode_batch=b, decode_context=100 * b)
        assert abs(core.model.step_seconds(shape) / bumpy.step_seconds(shape) - 1) < (0.02 if b == 2 else 0.06), b
    off = StepShape(decode_batch=2, decode_context=200)
    assert KNEE.step_seconds(off) / bumpy.step_seconds(off) < 0.85  # what the curve alone would say


def test_step_model_token_corrections_apply_at_their_token_counts_only() -> None:
    fixed = dataclasses.replace(TRUTH, token_ms=(0.0, -0.5, 2.0))
    assert fixed.linear_ms(2) == pytest.approx(TRUTH.linear_ms(2) + 2.0)
    assert fixed.linear_ms(1) == pytest.approx(max(0.0, TRUTH.linear_ms(1) - 0.5))
    assert fixed.linear_ms(3) == TRUTH.linear_ms(3) and fixed.linear_ms(100) == TRUTH.linear_ms(100)
    assert fixed.decode_coeffs(2)[0] == pytest.approx(TRUTH.decode_coeffs(2)[0] + 2.0)


def test_steps_that_may_carry_a_hidden_prefill_chunk_are_not_learned() -> None:
    """A prompt longer than a step's token budget runs its earlier chunks in steps no first token marks: while
    it awaits its first token, nothing is learned from the steps (nor taken as pure decodes)."""
    config = dataclasses.replace(CONFIG, max_num_batched_tokens=256)
    core = AgentCore(AgentSettings("http://127.0.0.1:1", "i", PROFILE.name, config), PROFILE.model)
    for rid in ("a", "b"):
        core.admit(Tracked(rid, 0.0, 100, 50, stream=True), 0.0, dispatched=(0.01, 0.5))
    core.admit(Tracked("long", 0.0, 400, 5, stream=True), 0.0, dispatched=(0.1, 0.2))  # its chunks run unseen
    end = 0.0
    for _ in range(10):
        end += 0.02
        core.token("a", end)
        core.token("b", end + 1e-5)
    learner = core.step_learner
    assert learner is not None and not learner._decodes and learner.steps == 0 and learner.skipped >= 8
    core.complete("long", end, ok=False)
    for _ in range(10):
        end += 0.02
        core.token("a", end)
        core.token("b", end + 1e-5)
    assert len(learner._decodes[2]) >= 9
