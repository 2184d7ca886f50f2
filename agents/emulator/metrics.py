"""The emulator's /metrics: vLLM's metric names, meanings, labels and histogram buckets, as Prometheus text.

Names follow vLLM V1 (``vllm/v1/metrics/loggers.py``): gauges of the scheduler state, token and preemption
counters, and per-request latency histograms, all labelled ``model_name`` and ``engine`` ("0").
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

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


def _fmt(v: float) -> str:
    return repr(float(v))


def render(model_name: str, m: EngineMetrics, g: EngineGauges) -> str:
    """Prometheus text exposition (version 0.0.4) of all metrics."""
    lab = f'engine="0",model_name="{model_name}"'
    model = f'model_name="{model_name}"'
    out: list[str] = []

    def scalar(name: str, kind: str, help_text: str, value: float, labels: str = lab) -> None:
        sample = f"{name}_total" if kind == "counter" else name
        if not out or not out[-1].startswith(f"{sample}{{"):  # as prometheus_client (vLLM) names them
            out.append(f"# HELP {sample} {help_text}")
            out.append(f"# TYPE {sample} {kind}")
        out.append(f"{sample}{{{labels}}} {_fmt(value)}")

    def hist(name: str, help_text: str, h: Histogram) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} histogram")
        cum = 0
        for le, c in zip([*map(_fmt, h.buckets), "+Inf"], h.counts, strict=True):
            cum += c
            out.append(f'{name}_bucket{{{lab},le="{le}"}} {_fmt(cum)}')
        out.append(f"{name}_count{{{lab}}} {_fmt(h.n)}")
        out.append(f"{name}_sum{{{lab}}} {_fmt(h.total)}")

    cache_labels = f'block_size="{g.block_size}",num_gpu_blocks="{g.num_gpu_blocks}",engine="0"'
    scalar("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig", 1, cache_labels)
    scalar("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", g.running)
    scalar("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", g.waiting)
    scalar("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", g.kv_usage)
    scalar("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine.",
           g.preemptions)
    scalar("vllm:prefix_cache_queries", "counter",
           "Prefix cache queries, in terms of number of queried tokens.", g.prefix_cache_queries)
    scalar("vllm:prefix_cache_hits", "counter", "Prefix cache hits, in terms of number of cached tokens.",
           g.prefix_cache_hits)
    scalar("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.", m.prompt_tokens)
    scalar("vllm:generation_tokens", "counter", "Number of generation tokens processed.", m.generation_tokens)
    for reason in FINISH_REASONS:
        scalar("vllm:request_success", "counter", "Count of successfully processed requests.",
               m.success[reason], f'{lab},finished_reason="{reason}"')
    hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", m.ttft)
    hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", m.itl)
    hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", m.e2e)
    hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", m.queue)
    hist("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", m.iteration_tokens)
    scalar("blockctl_emulator_steps", "counter", "Engine steps the emulator has run.", m.steps, model)
    scalar("blockctl_emulator_step_seconds", "counter", "Emulated duration of those steps.", m.step_seconds,
           model)
    scalar("blockctl_emulator_late_seconds", "counter",
           "Total lateness of step completions (the emulator's own CPU time exceeding the step).",
           m.late_seconds, model)
    scalar("blockctl_emulator_engine_cpu_seconds", "counter",
           "Time the engine loop spent scheduling, completing steps and waking streams.",
           m.engine_cpu_seconds, model)
    return "\n".join(out) + "\n"
