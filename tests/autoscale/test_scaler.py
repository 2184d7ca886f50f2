"""Pure scaling decisions on plain values: up before a breach, hysteresis, limits, cooldowns, config."""

from __future__ import annotations

import dataclasses

import pytest

from blockctl.cluster.projection import Load, project_ttft
from blockctl.cluster.scaler import (
    AutoscaleConfig,
    Observation,
    Predictive,
    Reactive,
    make_scale_policy,
    projections,
)
from blockctl.engine.profile import load_profile
from blockctl.errors import ConfigError

CFG = AutoscaleConfig(min_instances=1, max_instances=5, slo_ttft_s=2.0, up_cooldown_s=10, down_cooldown_s=60)
GOAL = CFG.target_ttft_s  # 1.0 s


def obs(**kw: object) -> Observation:
    base: dict[str, object] = {"now": 100.0, "ready": 2}
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def test_predictive_takes_smallest_count_that_meets_target() -> None:
    d = Predictive(CFG).decide(obs(projected_ttft_s={2: 5.0, 3: 1.5, 4: 0.8}))
    assert (d.action, d.target) == ("up", 4)
    assert "projected TTFT" in d.reason


def test_predictive_holds_when_current_fits_and_one_fewer_is_not_far_below() -> None:
    d = Predictive(CFG).decide(obs(projected_ttft_s={2: 0.9, 1: 0.7}))  # 0.7 > down_frac × goal = 0.5
    assert (d.action, d.target) == ("hold", 2)


def test_predictive_scales_down_with_hysteresis() -> None:
    d = Predictive(CFG).decide(obs(projected_ttft_s={2: 0.2, 1: 0.4}))
    assert (d.action, d.target) == ("down", 1)


def test_min_and_max_bound_the_target() -> None:
    d = Predictive(CFG).decide(obs(projected_ttft_s={2: 9.0, 3: 9.0, 4: 9.0, 5: 9.0}))
    assert (d.action, d.target) == ("up", 5)
    d = Predictive(CFG).decide(obs(ready=1, projected_ttft_s={1: 0.0}))
    assert (d.action, d.target) == ("hold", 1)
    d = Predictive(CFG).decide(obs(ready=7, projected_ttft_s={7: 0.1}))
    assert (d.action, d.target) == ("down", 5)
    assert "max_instances" in d.reason


def test_cooldowns_hold_decisions_back() -> None:
    d = Reactive(CFG).decide(obs(ttft_p99_s=3.0, last_up_s=95.0))
    assert (d.action, d.target) == ("hold", 2) and "cooldown" in d.reason
    assert Reactive(CFG).decide(obs(ttft_p99_s=3.0, last_up_s=80.0)).action == "up"
    # the projection already counts launched instances: predictive scale-ups skip the up-cooldown
    assert Predictive(CFG).decide(obs(projected_ttft_s={2: 5.0, 3: 0.5}, last_up_s=99.0)).action == "up"
    down = obs(projected_ttft_s={2: 0.1, 1: 0.1}, last_up_s=50.0)
    d = Predictive(CFG).decide(down)
    assert d.action == "hold" and "scale-down cooldown" in d.reason
    assert Predictive(CFG).decide(obs(projected_ttft_s={2: 0.1, 1: 0.1}, last_up_s=30.0)).action == "down"
    d = Predictive(CFG).decide(obs(ready=1, starting=1, projected_ttft_s={2: 0.1, 1: 0.1}))
    assert d.action == "hold" and "starting" in d.reason


def test_reactive_follows_observed_p99() -> None:
    r = Reactive(CFG)
    assert r.decide(obs(ttft_p99_s=None)).action == "hold"
    d = r.decide(obs(ttft_p99_s=1.6))
    assert (d.action, d.target) == ("up", 4)  # ceil(2 × 1.6 / 1.0)
    d = r.decide(obs(ttft_p99_s=30.0))
    assert (d.action, d.target) == ("up", 4)  # at most doubling per step
    assert r.decide(obs(ttft_p99_s=0.2, waiting=3)).action == "hold"
    assert (r.decide(obs(ttft_p99_s=0.2)).action, r.decide(obs(ttft_p99_s=0.2)).target) == ("down", 1)


def test_projections_search_stops_at_first_fit() -> None:
    asked: list[tuple[int, float]] = []

    def project(n: int, margin: float) -> float:
        asked.append((n, margin))
        return 4.0 / n

    assert projections(project, 2, CFG) == {2: 2.0, 3: 4.0 / 3, 4: 1.0}
    assert asked == [(2, 0.2), (3, 0.2), (4, 0.2)]
    asked.clear()
    assert set(projections(project, 5, CFG)) == {5, 4}
    assert asked == [(5, 0.2), (4, 0.2 + CFG.down_margin)]  # one fewer is judged at a higher load


def test_predictive_scales_up_before_breach_on_rising_rate() -> None:
    """Same cluster, same current rate: a rising trend projects a breach after start-up, a flat one not."""
    profile = load_profile("h100/llama-2-7b")
    config, model = profile.engine_defaults(), profile.model
    config = dataclasses.replace(config, max_num_seqs=16)
    cfg = AutoscaleConfig(min_instances=1, max_instances=4, slo_ttft_s=2.0, startup_s=20.0, horizon_s=10.0)

    def decide(slope: float) -> tuple[str, int]:
        load = Load(rate=5.0, lengths=[(200, 200)], slope=slope, margin=0.0)
        proj = projections(lambda n, _m: project_ttft(config, model, [((), ())], n, load, startup_s=20.0,
                                                      horizon_s=10.0, give_up_above=4.0), 1, cfg)
        d = Predictive(cfg).decide(Observation(now=0.0, ready=1, projected_ttft_s=proj))
        return d.action, d.target

    assert decide(0.0)[0] == "hold"
    action, target = decide(0.5)  # 5 → 15 req/s within the start-up time
    assert action == "up" and target >= 2


def test_config_from_mapping_names_bad_keys() -> None:
    cfg = AutoscaleConfig.from_mapping({"min_instances": 2, "max_instances": 4, "slo_ttft_s": 1, "policy": "reactive"})
    assert (cfg.min_instances, cfg.max_instances, cfg.slo_ttft_s, cfg.policy) == (2, 4, 1.0, "reactive")
    with pytest.raises(ConfigError, match=r"spec.yaml:autoscale.colour"):
        AutoscaleConfig.from_mapping({"colour": 1}, source="spec.yaml")
    with pytest.raises(ConfigError, match=r"autoscale.max_instances"):
        AutoscaleConfig.from_mapping({"min_instances": 3, "max_instances": 2})
    with pytest.raises(ConfigError, match=r"autoscale.policy"):
        make_scale_policy(AutoscaleConfig(policy="magic"))
    with pytest.raises(ConfigError, match=r"autoscale.min_instances"):
        AutoscaleConfig.from_mapping({"min_instances": 1.5})
