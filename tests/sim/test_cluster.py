"""The virtual-time cluster: hand-checkable runs against the engine model and the routing policies."""

from __future__ import annotations

import dataclasses
import random
import statistics

import pytest

from blockctl.bench.capacity import Slo
from blockctl.bench.sim.cluster import ClusterSim, SimRecord, simulate
from blockctl.bench.sim.observe import SimAgent
from blockctl.engine.core import Engine
from blockctl.engine.profile import load_profile
from blockctl.engine.types import EngineConfig, Phase, Request
from blockctl.scheduler.policies import make_policy

PROFILE = load_profile("h100/llama-2-7b")
CONFIG = EngineConfig(block_size=16, num_gpu_blocks=400, max_num_seqs=16, max_num_batched_tokens=512,
                      max_model_len=2048)


def _workload(n: int, seed: int) -> tuple[list[int], list[int], list[float]]:
    """Heavy-tailed outputs (1 in 8 long), varied prompts, Poisson arrivals at about 12 requests/s."""
    rng = random.Random(seed)
    prompts = [rng.randint(20, 400) for _ in range(n)]
    outputs = [rng.randint(600, 1200) if rng.random() < 0.125 else rng.randint(5, 80) for _ in range(n)]
    t = 0.0
    arrivals = []
    for _ in range(n):
        arrivals.append(t)
        t += rng.expovariate(12.0)
    return prompts, outputs, arrivals


def _run(policy: str, instances: int, n: int = 200, *, seed: int = 0, noise: float | None = 0.0,
         lengths: list[int] | None = None, speedup: float = 1.0) -> list[SimRecord]:
    prompts, outputs, arrivals = _workload(n, seed)
    arrivals = [t / speedup for t in arrivals]
    sim = ClusterSim(instances, CONFIG, PROFILE.model, make_policy(policy), seed=seed, noise=noise)
    assert simulate(sim, prompts, outputs, lengths or outputs, arrivals)
    return sim.records


def test_one_instance_latencies_equal_the_engine_model() -> None:
    prompts, outputs, arrivals = _workload(60, 1)
    records = _run("block", 1, 60, seed=1)
    engine = Engine(CONFIG, PROFILE.model, noise=0.0)
    reqs = []
    for i, (p, o, t) in enumerate(zip(prompts, outputs, arrivals, strict=True)):
        engine.run_until(t)
        reqs.append(Request(str(i), p, o, arrival_time=t))
        engine.add(reqs[-1])
    while engine.has_work():
        engine.run_until(engine.now + 100.0)
    assert len(records) == 60
    for rec, req in zip(records, reqs, strict=True):
        assert rec.instance == "i0"
        # equal up to rounding: the simulator also stops the engine's fast-forward at its agents' scrapes
        assert rec.first_token_time == pytest.approx(req.first_token_time, rel=1e-12)
        assert rec.finish_time == pytest.approx(req.finish_time, rel=1e-12)
        assert rec.ttft is not None and rec.ttft > 0 and rec.e2e is not None and rec.e2e >= rec.ttft


def test_round_robin_spreads_evenly_in_order() -> None:
    records = _run("round-robin", 4, 40)
    assert [r.instance for r in records[:8]] == ["i0", "i1", "i2", "i3"] * 2
    counts = {name: sum(r.instance == name for r in records) for name in ("i0", "i1", "i2", "i3")}
    assert set(counts.values()) == {10}


def test_isolated_request_prediction_is_exact_without_noise_or_length_error() -> None:
    # Requests 100 s apart never meet: each what-if sees an idle instance and the true length.
    sim = ClusterSim(2, CONFIG, PROFILE.model, make_policy("block"), seed=0, noise=0.0)
    assert simulate(sim, [300, 50, 700], [40, 200, 3], [40, 200, 3], [0.0, 100.0, 200.0])
    for rec in sim.records:
        assert rec.predicted_ttft_s == pytest.approx(rec.ttft, rel=1e-9)
        assert rec.predicted_e2e_s == pytest.approx(rec.e2e, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_beats_random_on_heavy_tailed_load(seed: int) -> None:
    # Four small instances at about 36 requests/s, 1 in 8 requests long: random piles long requests on
    # some instances while others idle; block sees each instance's queue and the new request's length.
    block = _run("block", 4, 300, seed=seed, speedup=3.0)
    rand = _run("random", 4, 300, seed=seed, speedup=3.0)

    def mean_e2e(rs: list[SimRecord]) -> float:
        return statistics.fmean(r.e2e for r in rs if r.e2e is not None)

    def p90_ttft(rs: list[SimRecord]) -> float:
        return statistics.quantiles([r.ttft for r in rs if r.ttft is not None], n=10)[-1]

    assert mean_e2e(block) < 0.95 * mean_e2e(rand)
    assert p90_ttft(block) < p90_ttft(rand)


def test_same_seed_same_run_with_noise() -> None:
    def key(rs: list[SimRecord]) -> list[tuple[str, float | None, float | None]]:
        return [(r.instance, r.first_token_time, r.finish_time) for r in rs]

    a = _run("block-po2", 3, 120, seed=5, noise=None)
    b = _run("block-po2", 3, 120, seed=5, noise=None)
    c = _run("block-po2", 3, 120, seed=6, noise=None)
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_noise_changes_step_times_but_not_by_much() -> None:
    assert PROFILE.model.rel_noise > 0
    exact = _run("round-robin", 2, 80, seed=3, noise=0.0)
    noisy = _run("round-robin", 2, 80, seed=3, noise=None)
    ratios = [n.e2e / e.e2e for n, e in zip(noisy, exact, strict=True) if n.e2e and e.e2e]
    assert any(abs(r - 1.0) > 1e-6 for r in ratios)
    assert 0.8 < statistics.fmean(ratios) < 1.25


def test_early_stop_when_the_slo_is_certainly_broken() -> None:
    prompts, outputs, arrivals = _workload(400, 4)
    squeezed = [t / 20.0 for t in arrivals]  # 240 requests/s at one instance: hopeless
    sim = ClusterSim(1, CONFIG, PROFILE.model, make_policy("round-robin"), seed=4, noise=0.0)
    slo = Slo("ttft", "p90", 1.0)
    assert not simulate(sim, prompts, outputs, outputs, squeezed, abort=slo)
    assert len(sim.records) < 400
    light = ClusterSim(8, CONFIG, PROFILE.model, make_policy("round-robin"), seed=4, noise=0.0)
    assert simulate(light, prompts[:50], outputs[:50], outputs[:50], arrivals[:50], abort=slo)


def test_the_agent_view_hides_true_lengths_and_applies_overrun() -> None:
    engine = Engine(CONFIG, PROFILE.model, noise=0.0)
    agent = SimAgent(engine, CONFIG)
    for req_id, true, told in (("a", 50, 400), ("b", 500, 4)):  # a is predicted long, b short
        req = Request(req_id, 100, true)
        engine.add(req)
        agent.admit(req, told, 0.0)
    engine.run_until(0.2)  # both are decoding by now
    view = agent.view()
    assert view.waiting == [] and [r.req_id for r in view.running] == ["a", "b"]
    a, b = view.running
    assert a.output_tokens == 400
    assert b.num_output_tokens > 4 and b.output_tokens > b.num_output_tokens  # overrun: pushed further out
    assert all(r.phase is Phase.RUNNING and r.num_computed_tokens == r.prompt_tokens + r.num_output_tokens - 1
               for r in view.running)
    assert all(r is not s for r in view.running for s in engine.running)


def test_the_agent_learns_preemptions_only_from_scraped_metrics() -> None:
    config = dataclasses.replace(CONFIG, num_gpu_blocks=40, max_num_seqs=4)
    engine = Engine(config, PROFILE.model, noise=0.0)
    agent = SimAgent(engine, config)
    for i in range(4):
        req = Request(f"r{i}", 100, 400)
        engine.add(req)
        agent.admit(req, 400, 0.0)
    while engine.num_preemptions_total == 0:
        engine.step()
    waiting_now = len(engine.waiting)
    assert waiting_now > 0
    blind = agent.view()  # no scrape yet: the preempted requests still look like they run
    assert len(blind.running) == 4 and blind.preempted == 0
    agent.scrape()
    engine.step()  # one more step: the running ones stream a token after the scrape
    seen = agent.view()
    assert seen.preempted == waiting_now and len(seen.waiting) == waiting_now
    assert seen.kv_free_blocks == round(config.num_gpu_blocks * (1 - agent.obs.kv_usage))  # type: ignore[union-attr]
