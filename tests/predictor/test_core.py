"""The agent's prediction function on plain values: shapes, monotonicity in load, overrun, error scoring."""

from __future__ import annotations

import pytest

from blockctl.errors import EngineError
from blockctl.predict.tracker import Tracked
from blockctl.promexpo import Families

from .helpers import core_with


def test_more_load_means_larger_predicted_latency() -> None:
    e2e, ttft = [], []
    for running, waiting in [(0, 0), (8, 0), (32, 0), (48, 16), (48, 64)]:
        p, view = core_with(running, waiting).predict(500, 200, 100.0)
        assert (len(view.running), len(view.waiting)) == (running, waiting)
        assert 0 < p.ttft_s <= p.e2e_s
        assert 0 <= p.queue_s <= p.ttft_s
        e2e.append(p.e2e_s)
        ttft.append(p.ttft_s)
    assert e2e == sorted(e2e) and e2e[-1] > 2 * e2e[0]
    assert ttft[-1] > ttft[0]
    longer, _ = core_with(8, 0).predict(500, 400, 100.0)
    assert longer.e2e_s > e2e[1]  # a longer predicted output takes longer


def test_an_overrun_request_still_occupies_the_engine() -> None:
    core = core_with(0, 0)
    alone, _ = core.predict(100, 50, 100.0)
    t = Tracked("big", 50.0, 2000, 10, stream=True, produced=400, first_token_at=51.0, last_token_at=99.99)
    core.tracker.add(t)
    p, view = core.predict(100, 50, 100.0)
    assert view.running[0].output_tokens == 600  # 400 produced, predicted 10: half again
    assert p.e2e_s > alone.e2e_s


def test_impossible_prompt_is_an_engine_error() -> None:
    core = core_with(0, 0)
    with pytest.raises(EngineError):
        core.predict(core.settings.engine_config.max_model_len, 10, 100.0)


def test_admit_records_the_arrival_prediction_and_complete_scores_it() -> None:
    core = core_with(4, 0)
    t = Tracked("x", 100.0, 200, 20, stream=True)
    core.admit(t, 100.0)
    assert t.predicted_ttft_s is not None and t.predicted_e2e_s is not None
    core.tracker.token("x", 100.0 + t.predicted_ttft_s * 2)
    core.complete("x", 100.0 + t.predicted_e2e_s, ok=True, output_tokens=20)
    assert core.errors.e2e.total == 1 and core.errors.e2e.mape() == pytest.approx(0.0, abs=1e-6)
    assert core.errors.ttft.total == 1 and core.errors.ttft.mape() == pytest.approx(50.0)
    core.admit(Tracked("y", 100.0, 200, 20, stream=False), 100.0)
    core.complete("y", 101.0, ok=False)
    assert core.errors.e2e.total == 1 and core.tracker.total_failed == 1
    families = Families()
    core.errors.render(families)
    text = families.render()
    assert 'blockctl_agent_ttft_relative_error_bucket{le="+Inf"} 1.0' in text
    assert "blockctl_agent_e2e_abs_pct_error_count 1.0" in text


def test_the_wait_for_the_step_in_progress_is_dated_by_the_newest_token() -> None:
    from blockctl.engine.types import StepShape

    core = core_with(4, 0)
    view = core.view(100.0)
    step = core.model.step_seconds(
        StepShape(decode_batch=4, decode_context=sum(r.num_computed_tokens for r in view.running))
    )
    core.tracker.last_token_at = 100.0 - step / 4  # a quarter of the step has passed
    assert core.step_wait_s(view, 100.0) == pytest.approx(0.75 * step)
    core.tracker.last_token_at = 100.0 - 5 * step  # no usable mark: half a step on average
    assert core.step_wait_s(view, 100.0) == pytest.approx(0.5 * step)
    assert core_with(0, 3).step_wait_s(core_with(0, 3).view(100.0), 100.0) == 0.0  # idle engine


def test_the_autoscaler_reads_the_agents_own_view_from_state() -> None:
    from blockctl.cluster.autoscaler import queues_from_state

    core = core_with(3, 2)
    core.tracker.add(Tracked("over", 95.0, 100, 10, stream=True, produced=40, first_token_at=96.0,
                             last_token_at=99.99))  # past its prediction: the view's overrun rule applies
    view = core.view(100.0)
    expect = [[(r.req_id, r.output_tokens, r.num_output_tokens, r.num_computed_tokens, r.phase) for r in q]
              for q in (view.running, view.waiting)]
    running, waiting = queues_from_state(core.state(100.0))
    got = [[(r.req_id, r.output_tokens, r.num_output_tokens, r.num_computed_tokens, r.phase) for r in q]
           for q in (running, waiting)]
    assert got == expect
    assert ("over", 60, 40) in [(r[0], r[1], r[2]) for r in got[0]]
