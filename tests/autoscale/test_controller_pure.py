"""The controller's pure parts: agent /state to what-if queues, live queue delay, rate trend, live samples."""

from __future__ import annotations

import pytest

from blockctl.bench.autoscale_live import to_run
from blockctl.bench.sim.cluster import SimRecord
from blockctl.cluster.autoscaler import _slope, oldest_wait, queues_from_state
from blockctl.cluster.scaler import ScaleDecision
from blockctl.engine.types import Phase

DOC = {"requests": [
    {"id": "a", "age_s": 3.0, "prompt_tokens": 100, "predicted_output_tokens": 50, "max_tokens": None,
     "produced": 10, "phase": "running", "what_if_output_tokens": 50},
    {"id": "b", "age_s": 2.0, "prompt_tokens": 40, "predicted_output_tokens": 20, "max_tokens": 30,
     "produced": 25, "phase": "running", "what_if_output_tokens": 30},  # past its prediction: overrun, capped
    {"id": "c", "age_s": 1.5, "prompt_tokens": 70, "predicted_output_tokens": 90, "max_tokens": None,
     "produced": 0, "phase": "waiting", "what_if_output_tokens": 90},
    {"id": "d", "age_s": 1.0, "prompt_tokens": 5000, "predicted_output_tokens": 90, "max_tokens": None,
     "produced": 0, "phase": "waiting", "what_if_output_tokens": None},  # the agent's view cannot run it
]}


def test_queues_from_state_rebuild_the_agents_own_view() -> None:
    running, waiting = queues_from_state(DOC)
    a, b = running
    assert (a.req_id, a.output_tokens, a.num_output_tokens, a.num_computed_tokens, a.phase) == \
        ("a", 50, 10, 109, Phase.RUNNING)
    assert b.output_tokens == 30 and b.num_output_tokens == 25
    (c,) = waiting
    assert (c.req_id, c.prompt_tokens, c.output_tokens, c.num_computed_tokens) == ("c", 70, 90, 0)


def test_oldest_wait_and_slope() -> None:
    assert oldest_wait([DOC]) == 1.5
    assert oldest_wait([{"requests": []}]) == 0.0
    assert oldest_wait([]) is None
    assert _slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == pytest.approx(2.0)
    assert _slope([(0.0, 1.0), (1.0, 3.0)]) == 0.0


def test_live_samples_become_a_run() -> None:
    rec = SimRecord(0, "i0", 0.0, 10, 10, 10, first_token_time=0.5, finish_time=1.0)
    samples = [(0.0, ["i0"], []), (1.0, ["i0"], ["i1"]), (2.0, ["i0", "i1"], []), (3.0, ["i1"], [])]
    run = to_run("live", [rec], samples, [(0.9, ScaleDecision(2, "up", "why"))], sample_s=1.0)
    assert run.lifetimes == {"i0": (0.0, 3.0), "i1": (1.0, 4.0)}
    assert run.ready_at == {"i0": 0.0, "i1": 2.0}
    assert run.instance_seconds() == 6.0
    assert [tk.decision is not None for tk in run.ticks] == [False, True, False, False]


def test_next_plans_copy_settings_at_free_indexes() -> None:
    from blockctl.cluster.autoscale_local import next_plans
    from blockctl.cluster.state import ClusterState, InstanceState

    settings = {"index": 0, "engine_port": 9100, "agent_port": 9200, "seed": 7, "profile": "p",
                "engine_flags": {"max_num_seqs": 4}}
    state = ClusterState(kind="local", policy="block", settings={"base_port": 9000},
                         instances=(InstanceState("i0", "127.0.0.1", "a", "e", "p", settings=settings),))
    plans = next_plans(state, 2, startup_delay_s=3.0, skip=frozenset({1}))
    assert [(p.name, p.engine_port, p.agent_port) for p in plans] == [("i2", 9102, 9202), ("i3", 9103, 9203)]
    assert plans[0].settings["seed"] == 9 and plans[0].settings["engine_flags"] == {"max_num_seqs": 4}
    assert plans[0].settings["startup_delay"] == 3.0
