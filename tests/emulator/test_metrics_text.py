"""The /metrics text: vLLM names and buckets, cumulative histograms, parseable exposition."""

from __future__ import annotations

from blockctl_agents.emulator.metrics import (
    TTFT_BUCKETS,
    EngineGauges,
    EngineMetrics,
    render,
)
from tests.emulator.prom import parse, value


def test_render_histograms_are_cumulative_with_vllm_buckets() -> None:
    m = EngineMetrics()
    for v in (0.003, 0.003, 0.05, 9999.0):
        m.ttft.observe(v)
    m.success["stop"] = 3
    g = EngineGauges(running=2, waiting=1, kv_usage=0.25, preemptions=4, block_size=16, num_gpu_blocks=100)
    s = parse(render("m", m, g))
    assert value(s, "vllm:num_requests_running", model_name="m", engine="0") == 2
    assert value(s, "vllm:kv_cache_usage_perc") == 0.25
    assert value(s, "vllm:num_preemptions_total") == 4
    assert value(s, "vllm:request_success_total", finished_reason="stop") == 3
    buckets = [(float(dict(ls)["le"]), v) for (n, ls), v in s.items() if n == "vllm:time_to_first_token_seconds_bucket"]
    assert [le for le, _ in buckets] == [*TTFT_BUCKETS, float("inf")]
    assert value(s, "vllm:time_to_first_token_seconds_bucket", le="0.005") == 2
    assert value(s, "vllm:time_to_first_token_seconds_bucket", le="0.04") == 2
    assert value(s, "vllm:time_to_first_token_seconds_bucket", le="0.06") == 3
    assert value(s, "vllm:time_to_first_token_seconds_bucket", le="2560.0") == 3
    assert value(s, "vllm:time_to_first_token_seconds_bucket", le="+Inf") == 4
    assert value(s, "vllm:time_to_first_token_seconds_count") == 4
    assert abs(value(s, "vllm:time_to_first_token_seconds_sum") - 9999.056) < 1e-9


def test_every_family_has_help_and_type_once() -> None:
    text = render("m", EngineMetrics(), EngineGauges(0, 0, 0.0, 0, 16, 10))
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    for name in ("vllm:num_requests_waiting", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:e2e_request_latency_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:iteration_tokens_total", "vllm:num_preemptions_total"):
        assert name in types
