"""The emulator's /metrics: vLLM's metric names, meanings, labels and histogram buckets, as Prometheus text.

Names follow vLLM V1 (``vllm/v1/metrics/loggers.py``): gauges of the scheduler state, token and preemption
counters, and per-request latency histograms, all labelled ``model_name`` and ``engine`` ("0"). The text is
written by ``prometheus_client`` (as vLLM's is), from counters the engine loop keeps as plain numbers.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from blockctl.promexpo import Families

# vLLM's default bucket boundaries (vllm/v1/metrics/buckets.py).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


@dataclass(slots=True)
class Histogram:
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last = +Inf
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


@dataclass(slots=True)
class EngineMetrics:
    """Counters and histograms the engine loop updates; gauges are read from the engine at scrape time."""

    steps: int = 0
    step_seconds: float = 0.0  # emulated time of all steps
    late_seconds: float = 0.0  # how far step completions ran behind their deadlines, summed
    engine_cpu_seconds: float = 0.0  # wall time the engine loop spent planning, completing and fanning out
    prompt_tokens: int = 0
    generation_tokens: int = 0
    success: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    queue: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    iteration_tokens: Histogram = field(default_factory=lambda: Histogram(ITERATION_TOKENS_BUCKETS))


@dataclass(frozen=True, slots=True)
class EngineGauges:
    running: int
    waiting: int
    kv_usage: float  # 0..1
    preemptions: int
    block_size: int
    num_gpu_blocks: int
    prefix_cache_queries: int = 0  # counters, tokens (vLLM counts a request at its first admission)
    prefix_cache_hits: int = 0


def render(model_name: str, m: EngineMetrics, g: EngineGauges) -> str:
    """Prometheus text exposition (version 0.0.4) of all metrics, written by ``prometheus_client``."""
    lab = {"engine": "0", "model_name": model_name}
    model = {"model_name": model_name}
    f = Families()
    cache = {"block_size": str(g.block_size), "num_gpu_blocks": str(g.num_gpu_blocks), "engine": "0"}
    f.gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", 1, cache)
    f.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", g.running, lab)
    f.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", g.waiting, lab)
    f.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", g.kv_usage, lab)
    f.counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", g.preemptions, lab)
    f.counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
              g.prefix_cache_queries, lab)
    f.counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
              g.prefix_cache_hits, lab)
    f.counter("vllm:prompt_tokens", "Number of prefill tokens processed.", m.prompt_tokens, lab)
    f.counter("vllm:generation_tokens", "Number of generation tokens processed.", m.generation_tokens, lab)
    for reason in FINISH_REASONS:
        f.counter("vllm:request_success", "Count of successfully processed requests.", m.success[reason],
                  {**lab, "finished_reason": reason})
    for name, help_text, h in (
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", m.ttft),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", m.itl),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", m.e2e),
        ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", m.queue),
        ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", m.iteration_tokens),
    ):
        f.histogram(name, help_text, h.buckets, h.counts, h.total, lab)
    f.counter("blockctl_emulator_steps", "Engine steps the emulator has run.", m.steps, model)
    f.counter("blockctl_emulator_step_seconds", "Emulated duration of those steps.", m.step_seconds, model)
    f.counter("blockctl_emulator_late_seconds",
              "Total lateness of step completions (the emulator's own CPU time exceeding the step).",
              m.late_seconds, model)
    f.counter("blockctl_emulator_engine_cpu_seconds",
              "Time the engine loop spent scheduling, completing steps and waking streams.",
              m.engine_cpu_seconds, model)
    return f.render()
