"""The simulator with prefix caching: engines hit, the what-if is told the instance's hit, and a workload
without token ids runs exactly as without the cache."""

from __future__ import annotations

import dataclasses

import pytest

from blockctl.bench.sim.cluster import ClusterSim
from blockctl.bench.sim.run import SimSetup, prepare
from blockctl.engine.prefixcache import block_hashes
from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.scheduler.policies import make_policy


def test_a_repeated_prefix_is_predicted_and_served_faster_on_the_instance_that_holds_it() -> None:
    prof = load_profile(DEFAULT_PROFILE)
    cfg = dataclasses.replace(prof.engine_defaults(), enable_prefix_caching=True)
    sim = ClusterSim(1, cfg, prof.model, make_policy("block"), noise=0.0)
    system = list(range(5000, 7000))
    first = sim.dispatch(0, 0.0, 2010, 5, 5, block_hashes=block_hashes([*system, *range(10)], cfg.block_size))
    sim.advance(10.0)
    second = sim.dispatch(1, 10.0, 2010, 5, 5, block_hashes=block_hashes([*system, *range(20, 30)], cfg.block_size))
    sim.drain()
    assert first.predicted_ttft_s is not None and second.predicted_ttft_s is not None
    assert first.ttft is not None and second.ttft is not None
    assert second.predicted_ttft_s < 0.5 * first.predicted_ttft_s and second.ttft < 0.5 * first.ttft
    queries, hits = sim.prefix_cache_counts()
    assert queries == 2 * 2010 and hits == 2000 // cfg.block_size * cfg.block_size


def test_prefix_caching_is_on_only_for_workloads_that_carry_token_ids() -> None:
    shared = prepare(SimSetup(workload="generated-shared-prefix", requests=50))
    plain = prepare(SimSetup(workload="synthetic-sharegpt", requests=50))
    assert shared.config.enable_prefix_caching and shared.hashes is not None
    assert not plain.config.enable_prefix_caching and plain.hashes is None
    off = prepare(SimSetup(workload="generated-shared-prefix", requests=50, prefix_caching=False))
    assert not off.config.enable_prefix_caching


def test_requests_sharing_a_prompt_on_a_full_cache_are_predicted_as_the_engine_shares_it() -> None:
    """Three requests with one 1,600-token prompt on a cache that holds it about twice: the engine runs them
    together (the prompt's blocks held once); the agent's what-if must count them once too (its shadow's
    shared references, and the new request's held hit), or it predicts each waits for the others."""
    prof = load_profile(DEFAULT_PROFILE)
    cfg = dataclasses.replace(prof.engine_defaults(), enable_prefix_caching=True, num_gpu_blocks=230)
    sim = ClusterSim(1, cfg, prof.model, make_policy("block"), noise=0.0)
    system = list(range(5000, 6600))
    recs = []
    for i in range(3):
        t = 0.5 * i
        sim.advance(t)
        recs.append(sim.dispatch(i, t, 1610, 200, 200,
                                 block_hashes=block_hashes([*system, *range(10 * i, 10 * i + 10)], cfg.block_size)))
    sim.drain()
    for rec in recs[1:]:
        assert rec.predicted_ttft_s is not None and rec.ttft is not None and rec.e2e is not None
        assert rec.ttft < 0.2  # the engine admitted it at once, beside the others
        assert rec.predicted_ttft_s == pytest.approx(rec.ttft, abs=0.02)
        assert rec.predicted_e2e_s == pytest.approx(rec.e2e, rel=0.05)
