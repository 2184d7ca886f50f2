"""Pure rules of the agent: fallback length, progress estimate, overrun, SSE counting, metric parsing."""

from __future__ import annotations

import json

import pytest

from blockctl.predict.tracker import (
    DEFAULT_OUTPUT_TOKENS,
    Tracked,
    Tracker,
    assumed_total_output,
    estimated_produced,
    fallback_output_tokens,
)
from blockctl_agents.predictor.observe import parse_metrics
from blockctl_agents.predictor.sse import SseTokenCounter


def test_fallback_output_tokens() -> None:
    assert fallback_output_tokens(None, False) == DEFAULT_OUTPUT_TOKENS
    assert fallback_output_tokens(100, False) == 100
    assert fallback_output_tokens(5000, False) == DEFAULT_OUTPUT_TOKENS
    assert fallback_output_tokens(5000, True) == 5000  # ignore_eos: the limit is the length


@pytest.mark.parametrize(
    ("produced", "predicted", "max_tokens", "cap", "want"),
    [
        (10, 100, None, 4000, 100),  # within prediction: the prediction
        (100, 100, None, 4000, 150),  # at the prediction: half again
        (300, 100, None, 4000, 450),  # far past: grows with what it produced
        (1000, 100, None, 4000, 1256),  # ... up to about a mean reply
        (0, 1, None, 4000, 1),
        (1, 1, None, 4000, 2),  # never zero left
        (300, 100, 320, 4000, 320),  # capped by max_tokens
        (320, 100, 320, 4000, 321),  # ... but still one token left
        (300, 100, None, 350, 350),  # capped by the model length
    ],
)
def test_overrun_rule(produced: int, predicted: int, max_tokens: int | None, cap: int, want: int) -> None:
    assert assumed_total_output(produced, predicted, max_tokens, cap) == want


def test_non_streaming_progress_interpolates_the_arrival_prediction() -> None:
    t = Tracked("a", 100.0, 50, 11, stream=False, predicted_ttft_s=1.0, predicted_e2e_s=2.0)
    assert estimated_produced(t, 100.5) == 0  # before the predicted first token
    assert estimated_produced(t, 101.0) == 1
    assert estimated_produced(t, 101.55) == 6  # 0.1 s per token after the first
    assert estimated_produced(t, 103.0) == 21  # extrapolated past the predicted finish
    t.max_tokens = 15
    assert estimated_produced(t, 103.0) == 15
    streaming = Tracked("b", 100.0, 50, 11, stream=True, produced=7)
    assert estimated_produced(streaming, 200.0) == 7


def test_tracker_counts_tokens_and_recent_arrivals() -> None:
    tr = Tracker()
    tr.add(Tracked("a", 0.0, 10, 5, stream=True))
    tr.add(Tracked("b", 50.0, 10, 5, stream=True))
    tr.token("a", 1.0)
    tr.token("a", 1.5, 2)
    tr.token("missing", 1.0)
    a = tr.inflight["a"]
    assert (a.produced, a.first_token_at, a.last_token_at) == (3, 1.0, 1.5)
    assert tr.recent_requests(55.0) == 2
    assert tr.recent_requests(70.0) == 1
    assert tr.finish("a", ok=True) is a
    assert tr.finish("a", ok=True) is None
    assert (tr.total_requests, tr.total_completed, tr.total_failed) == (2, 1, 0)


def _sse(obj: object) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def test_sse_counter_counts_content_chunks_across_arbitrary_splits() -> None:
    chat = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "length"}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}},
    ]
    stream = b"".join(_sse(e) for e in chat) + b"data: [DONE]\n\n"
    for step in (1, 7, len(stream)):
        c = SseTokenCounter()
        n = sum(c.feed(stream[i : i + step]) for i in range(0, len(stream), step))
        assert n == 3
        assert c.usage_completion_tokens == 3
        assert c.error is None


def test_sse_counter_completions_and_errors() -> None:
    c = SseTokenCounter()
    data = _sse({"choices": [{"text": "a", "finish_reason": None}]}) + _sse(
        {"choices": [{"text": "", "finish_reason": "length"}]}
    )
    assert c.feed(data.replace(b"\n", b"\r\n")) == 1
    assert c.feed(_sse({"error": {"message": "boom"}})) == 0
    assert c.error == "boom"


METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="emulated"} 12.0
vllm:num_requests_waiting{engine="0",model_name="emulated"} 3.0
vllm:kv_cache_usage_perc{engine="0",model_name="emulated"} 0.25
vllm:num_preemptions_total{engine="0",model_name="emulated"} 4.0 1700000000000
vllm:cache_config_info{block_size="16",num_gpu_blocks="512",engine="0"} 1.0
vllm:num_requests_running_extra 99
other_metric 5
"""


def test_parse_metrics() -> None:
    obs = parse_metrics(METRICS, 7.0)
    assert (obs.at, obs.running, obs.waiting, obs.kv_usage, obs.preemptions_total) == (7.0, 12, 3, 0.25, 4.0)
    assert obs.num_gpu_blocks == 512
    old = parse_metrics("vllm:gpu_cache_usage_perc 0.5\n", 1.0)
    assert old.kv_usage == 0.5
    assert old.running is None and old.waiting is None


def test_calibration_is_the_median_of_clamped_samples() -> None:
    from blockctl_agents.predictor.accuracy import Calibration

    cal = Calibration()
    assert cal.apply(0.1, 1.1, 0.005) == pytest.approx((0.105, 1.105))  # nothing learned yet
    for residual in (0.020, 0.002, 0.010, 9.0):  # one stall
        cal.overhead.observe(residual)
    assert cal.overhead.value == pytest.approx((0.010 + 0.020) / 2)
    cal.overhead.observe(-0.5)  # faster than predicted: no negative overhead
    assert min(cal.overhead.window) == 0.0 and max(cal.overhead.window) == 0.5
    for ratio in (1.2, 1.1, 1.3):
        cal.tpot.observe(ratio)
    ttft, e2e = cal.apply(0.1, 1.1, 0.0)
    assert ttft == pytest.approx(0.1 + cal.overhead.value)
    assert e2e == pytest.approx(ttft + 1.2 * 1.0)


def test_emulator_lag_from_metrics() -> None:
    from blockctl_agents.predictor.bench_accuracy import emulator_lag

    text = (
        'blockctl_emulator_step_seconds_total{model_name="emulated"} 40.0\n'
        'blockctl_emulator_late_seconds_total{model_name="emulated"} 2.0\n'
    )
    assert emulator_lag(text)["emulator_late_fraction"] == pytest.approx(0.05)
    assert emulator_lag("")["emulator_late_fraction"] is None
