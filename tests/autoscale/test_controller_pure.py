"""The controller's pure parts: agent /state to what-if queues, live queue delay, rate trend, live samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockctl.bench.autoscale_live import to_run
from blockctl.bench.sim.cluster import SimRecord
from blockctl.cluster.autoscaler import Controller, _slope, first_tokens, queues_from_state
from blockctl.cluster.scaler import AutoscaleConfig, ScaleDecision, observed_ttft_p99
from blockctl.engine.types import Phase
from tests.conftest import free_port
from tests.scheduler.fakes import write_cluster

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


def test_one_p99_definition_first_tokens_in_the_window_and_waits_so_far() -> None:
    """Live and simulated alike: TTFTs of the window's first tokens, plus the waits of requests without one."""
    firsts = [(100.0 - i * 0.1, 0.2) for i in range(99)] + [(99.0, 4.0), (50.0, 30.0)]  # (50, 30): out of window
    assert observed_ttft_p99(firsts, [], now=100.0, window_s=30.0) == pytest.approx(0.2 + 3.8 * 0.01)
    assert observed_ttft_p99(firsts[:99], [9.0, 9.0], now=100.0, window_s=30.0) == pytest.approx(9.0)
    assert observed_ttft_p99([], [], now=1.0, window_s=30.0) is None
    assert observed_ttft_p99([], [2.5], now=1.0, window_s=30.0) == 2.5  # a stuck queue shows at once
    doc = {"recent_ttfts": [[4.0, 0.3]], "requests": [
        {"id": "a", "age_s": 3.0, "ttft_s": 0.5, "produced": 10},
        {"id": "c", "age_s": 1.5, "ttft_s": None, "produced": 0}]}
    assert first_tokens([doc], now=100.0) == ([(96.0, 0.3), (97.5, 0.5)], [1.5])


def test_slope() -> None:
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


def _doc(name: str, requests: int) -> dict:  # type: ignore[type-arg]
    return {"instance": name, "totals": {"requests": requests}, "recent_requests": 0, "requests": []}


def test_rate_history_survives_an_agent_that_stops_answering(tmp_path: Path) -> None:
    ctl = Controller(tmp_path, AutoscaleConfig(window_s=30.0))
    for t in range(0, 21, 5):  # two agents, 10 and 2 requests/s
        rate = ctl._rate(float(t), [_doc("a", 10 * t), _doc("b", 2 * t)])
    assert rate == pytest.approx(12.0)
    assert ctl._rate(25.0, [_doc("a", 250)]) == pytest.approx(12.0)  # b missed one poll: its last rate stays
    assert ctl._rate(30.0, [_doc("a", 300), _doc("b", 60)]) == pytest.approx(12.0)  # and it is back, no jump
    assert ctl._rate(35.0, [_doc("a", 350), _doc("b", 3)]) == pytest.approx(10.0)  # b restarted: only b resets


def test_state_failures_are_counted_and_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cluster(tmp_path, {"dead": f"http://127.0.0.1:{free_port()}"})
    ctl = Controller(tmp_path, AutoscaleConfig(policy="reactive"), advisory=True)
    ctl.tick()
    ctl.tick()
    assert ctl.state_failures == {"dead": 2} and ctl.state_failures_total == 2
    assert "agent dead: /state failed (ConnectError" in capsys.readouterr().out
    line = json.loads((tmp_path / "autoscaler.jsonl").read_text().splitlines()[-1])
    assert line["state_failures"] == {"dead": 2} and line["state_failures_total"] == 2
