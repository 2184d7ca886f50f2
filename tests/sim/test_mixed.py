"""A mixed cluster: each simulated instance runs its own profile, and its agent predicts with that profile."""

from __future__ import annotations

import statistics

import pytest

from blockctl.bench.sim.cluster import ClusterSim, simulate
from blockctl.bench.sim.run import SimSetup, prepare, run_policy
from blockctl.engine.core import Engine
from blockctl.engine.profile import load_profile
from blockctl.engine.types import EngineConfig, Request
from blockctl.errors import ConfigError
from blockctl.scheduler.policies import make_policy

H100, H200 = load_profile("h100/llama-2-7b"), load_profile("h200/llama-2-7b")
CONFIG = EngineConfig(block_size=16, num_gpu_blocks=400, max_num_seqs=16, max_num_batched_tokens=512,
                      max_model_len=2048)


def test_profile_names_expand_counts_in_instance_order() -> None:
    setup = SimSetup(instances=3, profile="h100/llama-2-7b:1,h200/llama-2-7b:2")
    assert setup.profile_names() == ["h100/llama-2-7b", "h200/llama-2-7b", "h200/llama-2-7b"]
    assert SimSetup(instances=2).profile_names() == [SimSetup().profile] * 2


@pytest.mark.parametrize(("profile", "says"), [
    ("h100/llama-2-7b:1,h200/llama-2-7b:2", "add up to 3 instances, but --instances is 2"),
    ("h100/llama-2-7b:1,h200/llama-2-7b", "'h200/llama-2-7b' is not NAME:COUNT"),
    ("h100/llama-2-7b:0,h200/llama-2-7b:2", "'h100/llama-2-7b:0' is not NAME:COUNT"),
])
def test_bad_mixed_profile_names_the_option(profile: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        SimSetup(instances=2, profile=profile).validate()
    assert err.value.key == "--profile"


def test_each_instance_runs_and_predicts_with_its_own_profile() -> None:
    """Round-robin over one H100 and one H200 instance, same requests on each: every request's latency and
    prediction equal a lone engine of that instance's profile (the H200 is the faster one)."""
    n = 40
    prompts, outputs = [100 + 7 * i for i in range(n)], [30 + (i % 5) * 20 for i in range(n)]
    arrivals = [1.0 * i for i in range(n)]  # far apart: each request runs alone
    sim = ClusterSim(2, CONFIG, H100.model, make_policy("round-robin"), noise=0.0,
                     engines=[(CONFIG, H100.model), (CONFIG, H200.model)])
    assert simulate(sim, prompts, outputs, outputs, arrivals)
    by = {"i0": [], "i1": []}  # type: dict[str, list[float]]
    for rec in sim.records:
        model = H100.model if rec.instance == "i0" else H200.model
        alone = Engine(CONFIG, model, noise=0.0)
        req = Request("x", rec.prompt_tokens, rec.output_tokens)
        alone.add(req)
        alone.run_until_finished(req)
        assert rec.e2e == pytest.approx(req.finish_time, rel=1e-6)
        by[rec.instance].append(rec.e2e / rec.output_tokens)
    assert statistics.mean(by["i1"]) < 0.95 * statistics.mean(by["i0"])

    block = ClusterSim(2, CONFIG, H100.model, make_policy("block"), noise=0.0,
                       engines=[(CONFIG, H100.model), (CONFIG, H200.model)])
    assert simulate(block, prompts, outputs, outputs, arrivals)
    for rec in block.records:  # each prediction is its own instance's engine model, on an idle engine
        assert rec.instance == "i1"  # the faster one always wins when both are idle
        assert rec.predicted_e2e_s == pytest.approx(rec.e2e, rel=1e-6)


def test_a_mixed_setup_runs_end_to_end() -> None:
    setup = SimSetup(instances=2, profile="h100/llama-2-7b:1,h200/llama-2-7b:1", workload="synthetic-sharegpt",
                     requests=60, max_num_seqs=8, num_gpu_blocks=400, noise=False)
    prepared = prepare(setup)
    assert prepared.engines is not None
    assert [m for _, m in prepared.engines] == [H100.model, H200.model]
    run = run_policy(setup, prepared, "block", 8.0)
    assert run.complete and len(run.records) == 60
    assert {r.instance for r in run.records} == {"i0", "i1"}
