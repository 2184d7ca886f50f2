"""Routing policies on plain values: each policy's rule, ties, fallbacks and the registry."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockctl.engine.types import Prediction
from blockctl.errors import ClusterError, ConfigError
from blockctl.scheduler.policies import (
    POLICIES,
    PREDICTION_TIE_S,
    InstanceView,
    RouteRequest,
    blank_view,
    llumnix_freeness,
    make_policy,
)

REQ = RouteRequest(prompt_tokens=100, predicted_output_tokens=50)


def pred(e2e: float, ttft: float = 0.1) -> Prediction:
    return Prediction(ttft_s=ttft, e2e_s=e2e, queue_s=0.0, running=0, waiting=0, kv_free_blocks=0)


def view(name: str, *, prediction: Prediction | None = None, running: int = 0, waiting: int = 0,
         outstanding: int = 0, free: int = 1000, total: int = 1000, waiting_blocks: int = 0,
         recent: int = 0) -> InstanceView:
    return InstanceView(name, prediction, running, waiting, outstanding, free, total, waiting_blocks, recent)


def choose(name: str, views: list[InstanceView], seed: int = 0, **params: object) -> str:
    return make_policy(name, **params).choose(REQ, views, random.Random(seed))


def test_registry_has_every_contract_name() -> None:
    assert set(POLICIES) == {
        "block", "block-ttft", "block-p90", "block-po2", "block-pok", "round-robin", "random", "least-outstanding",
        "min-qpm", "llumnix", "infaas", "oracle", "cache-aware", "prefix-load", "kv-cost",
    }
    for name, cls in POLICIES.items():
        assert cls.name == name


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="valid: block, block-ttft"):
        make_policy("fastest")


def test_unknown_parameter_is_config_error() -> None:
    with pytest.raises(ConfigError, match="takes no parameter"):
        make_policy("block", k=3)
    assert make_policy("block", k=None).name == "block"
    with pytest.raises(ConfigError):
        make_policy("block-pok", k=0)


def test_block_picks_least_e2e_and_block_ttft_least_ttft() -> None:
    views = [view("a", prediction=pred(3.0, ttft=0.1)), view("b", prediction=pred(1.0, ttft=0.9)),
             view("c", prediction=pred(2.0, ttft=0.5))]
    assert choose("block", views) == "b"
    assert choose("block-ttft", views) == "a"
    assert choose("oracle", views) == "b"


def test_predictive_skips_views_without_prediction() -> None:
    views = [view("a", outstanding=0), view("b", prediction=pred(9.0), outstanding=50)]
    assert choose("block", views) == "b"


def test_predictive_falls_back_to_least_outstanding() -> None:
    views = [view("a", outstanding=3), view("b", outstanding=1), view("c", outstanding=2)]
    for name in ("block", "block-ttft", "block-po2", "block-pok", "oracle"):
        assert choose(name, views) == "b"


def test_ties_are_broken_by_rng_deterministically_and_fairly() -> None:
    views = [view(n, prediction=pred(1.0)) for n in "abcd"]
    assert choose("block", views, seed=7) == choose("block", list(reversed(views)), seed=7)
    picks = Counter(choose("block", views, seed=s) for s in range(400))
    assert set(picks) == set("abcd")
    assert min(picks.values()) > 50


def test_predictions_within_a_millisecond_are_a_tie() -> None:
    """Idle instances predict the same latency up to their agents' calibration (microseconds apart): block
    spreads such requests instead of sending every one to the instance that is a hair faster on paper."""
    near = [view("a", prediction=pred(0.1004)), view("b", prediction=pred(0.1000)), view("c", prediction=pred(0.2))]
    picks = Counter(choose("block", near, seed) for seed in range(200))
    assert set(picks) == {"a", "b"} and min(picks.values()) > 60
    apart = [view("a", prediction=pred(0.1012)), view("b", prediction=pred(0.1000))]
    assert {choose("block", apart, seed) for seed in range(50)} == {"b"}


def test_no_views_raises_cluster_error_with_hint() -> None:
    for name in POLICIES:
        with pytest.raises(ClusterError) as info:
            choose(name, [])
        assert info.value.hint == "blockctl status"


def test_po2_and_pok_sample_k_distinct_instances() -> None:
    names = [f"i{n}" for n in range(10)]
    rng = random.Random(1)
    po2 = make_policy("block-po2")
    pok = make_policy("block-pok", k=4)
    for _ in range(50):
        s2, s4 = po2.sample(names, rng), pok.sample(names, rng)
        assert len(set(s2)) == 2 and set(s2) <= set(names)
        assert len(set(s4)) == 4 and set(s4) <= set(names)
    assert sorted(pok.sample(names[:3], rng)) == names[:3]
    seen = Counter(n for _ in range(300) for n in po2.sample(names, rng))
    assert set(seen) == set(names)


def test_full_policies_ask_everyone() -> None:
    names = ["a", "b", "c"]
    for name in ("block", "block-ttft", "least-outstanding", "llumnix", "infaas", "min-qpm", "oracle"):
        assert make_policy(name).sample(names, random.Random(0)) == names


def test_oracle_predicts_with_true_length() -> None:
    oracle, block = make_policy("oracle"), make_policy("block")
    req = RouteRequest(prompt_tokens=10, predicted_output_tokens=100, true_output_tokens=7)
    assert oracle.prediction_length(req) == 7
    assert block.prediction_length(req) == 100
    assert oracle.prediction_length(REQ) == 50


def test_round_robin_cycles_in_name_order_across_list_changes() -> None:
    rr = make_policy("round-robin")
    rng = random.Random(0)
    views = [blank_view("b"), blank_view("a"), blank_view("c")]
    assert [rr.choose(REQ, views, rng) for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert rr.choose(REQ, views[:2], rng) in {"a", "b"}
    assert not rr.needs_load and not rr.needs_prediction


def test_random_spreads_over_all() -> None:
    views = [blank_view(n) for n in "xyz"]
    picks = Counter(choose("random", views, seed=s) for s in range(300))
    assert set(picks) == set("xyz")


def test_least_outstanding_and_min_qpm() -> None:
    views = [view("a", outstanding=5, recent=1), view("b", outstanding=2, recent=9)]
    assert choose("least-outstanding", views) == "b"
    assert choose("min-qpm", views) == "a"


def test_llumnix_freeness_counts_queued_prompt_blocks() -> None:
    # a: 1000 free, 800 needed by its queue, 2 requests -> 100 per request
    # b: 600 free, nothing queued, 4 running -> 150 per request
    a = view("a", running=1, waiting=1, free=1000, waiting_blocks=800)
    b = view("b", running=4, free=600)
    assert llumnix_freeness(a) == 100.0
    assert llumnix_freeness(b) == 150.0
    assert choose("llumnix", [a, b]) == "b"
    idle = view("c", free=10)
    assert llumnix_freeness(idle) == math.inf
    assert choose("llumnix", [a, b, idle]) == "c"
    # Overcommitted queues make freeness negative; the less negative one is freer.
    worse = view("w", waiting=1, free=100, waiting_blocks=500)
    bad = view("x", waiting=1, free=100, waiting_blocks=200)
    assert choose("llumnix", [worse, bad]) == "x"


def test_infaas_free_blocks_per_running_request() -> None:
    a = view("a", running=10, free=1000)  # 100 each
    b = view("b", running=2, free=300)  # 150 each
    assert choose("infaas", [a, b]) == "b"
    assert choose("infaas", [a, b, view("idle", running=0, free=1)]) == "idle"


@given(
    st.lists(st.floats(min_value=0.0, max_value=1e4, allow_nan=False), min_size=1, max_size=12),
    st.integers(min_value=0, max_value=2**32),
)
def test_block_choice_is_always_a_minimum(e2es: list[float], seed: int) -> None:
    views = [view(f"i{n}", prediction=pred(e)) for n, e in enumerate(e2es)]
    chosen = choose("block", views, seed=seed)
    assert dict(zip((v.instance for v in views), e2es, strict=True))[chosen] <= min(e2es) + PREDICTION_TIE_S


@given(st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=12), st.integers(0, 1000))
def test_every_policy_returns_one_of_the_views(loads: list[int], seed: int) -> None:
    views = [view(f"i{n}", running=x, outstanding=x, recent=x, free=1000 - x, prediction=pred(x + 1.0))
             for n, x in enumerate(loads)]
    names = {v.instance for v in views}
    for name in POLICIES:
        assert choose(name, views, seed=seed) in names


def test_a_quantile_policy_asks_for_that_quantile_of_the_length() -> None:
    from blockctl.predict.lengths import dist

    req = RouteRequest(100, 50, length=dist([10, 20, 30, 400]))
    assert make_policy("block").prediction_length(req) == 50  # the mean it was told
    assert make_policy("block-p90").prediction_length(req) == 400  # P90: the long tail
    assert make_policy("block-p90").prediction_length(RouteRequest(100, 50)) == 50  # no distribution
