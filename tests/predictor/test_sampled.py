"""Expected latency over drawn lengths (blockctl.predict.sampled) against the point forecast and exact runs."""

from __future__ import annotations

import itertools

import pytest

from blockctl.engine.profile import load_profile
from blockctl.engine.types import EngineConfig, Request
from blockctl.engine.whatif import Forecaster, predict_exact
from blockctl.predict.lengths import dist
from blockctl.predict.sampled import SAMPLES, ExpectedForecaster
from blockctl.predict.tracker import Tracked
from blockctl.predict.view import build_view

MODEL = load_profile("h100/llama-2-7b").model
CFG = EngineConfig(block_size=16, num_gpu_blocks=2000, max_num_seqs=2, max_num_batched_tokens=512,
                   max_model_len=4096)
TWO_WAY = dist((10, 1000))  # half the replies end at once, half run long (mean 505)


def _table(lengths: list[object], produced: int = 5) -> list[Tracked]:
    """Two running streamed requests (``produced`` tokens each) with these lengths (a LengthDist or exact)."""
    table = []
    for i, length in enumerate(lengths):
        told = 505 if length is TWO_WAY else int(length)  # type: ignore[call-overload]
        t = Tracked(f"r{i}", 0.0, 100, told, True, length_dist=length if length is TWO_WAY else None)
        t.produced, t.first_token_at, t.last_token_at = produced, 0.1, 0.2
        table.append(t)
    return table


def test_the_new_request_waits_for_the_first_slot_to_free_not_for_the_least_mean() -> None:
    view = build_view(_table([TWO_WAY, TWO_WAY]), 0.3, CFG, None)
    new = Request("new", 50, 20)
    point = Forecaster(view.config, MODEL, view.running, view.waiting).predict(new)
    expected = ExpectedForecaster(view, MODEL).predict(new)
    # every combination of the two replies' lengths, run exactly: equally likely
    combos = []
    for a, b in itertools.product(TWO_WAY.atoms, repeat=2):
        running = [Request(r.req_id, r.prompt_tokens, total, num_computed_tokens=r.num_computed_tokens,
                           num_output_tokens=r.num_output_tokens, phase=r.phase)
                   for r, total in zip(view.running, (a, b), strict=True)]
        combos.append(predict_exact(view.config, MODEL, running, [], new).ttft_s)
    assert point.queue_s > 0  # both slots are taken: it queues
    assert expected.ttft_s < 0.6 * point.ttft_s  # three times in four a slot frees after a few tokens
    assert min(combos) <= expected.ttft_s <= max(combos)
    assert expected.ttft_s == pytest.approx(sum(combos) / len(combos), rel=0.35)
    assert ExpectedForecaster(view, MODEL).predict(new) == expected  # the same state, the same forecast


def test_exact_lengths_or_no_queue_give_the_point_forecast() -> None:
    new = Request("new", 50, 20)
    exact = build_view(_table([505, 505]), 0.3, CFG, None)
    assert not exact.lengths
    assert ExpectedForecaster(exact, MODEL).predict(new) == Forecaster(
        exact.config, MODEL, exact.running, exact.waiting).predict(new)
    free_slot = build_view(_table([TWO_WAY]), 0.3, CFG, None)  # one of two slots is free: admitted at once
    assert free_slot.lengths and SAMPLES > 1
    assert ExpectedForecaster(free_slot, MODEL).predict(new) == Forecaster(
        free_slot.config, MODEL, free_slot.running, free_slot.waiting).predict(new)


def test_draws_respect_what_was_produced_and_the_caps() -> None:
    assert TWO_WAY.draw_total(5, 0.0) == 10 and TWO_WAY.draw_total(5, 0.99) == 1000
    assert TWO_WAY.draw_total(10, 0.0) == 1000  # produced 10 already: only the long reply is left
    assert TWO_WAY.draw_total(1000, 0.5) is None
    table = _table([TWO_WAY, TWO_WAY], produced=3)
    table[0].max_tokens = 50
    view = build_view(table, 0.3, CFG, None)
    assert view.lengths["r0"] == (TWO_WAY, 50) and view.lengths["r1"][1] == CFG.max_model_len - 100
