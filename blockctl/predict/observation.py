"""The few engine metrics the in-flight view reconciles with (parsed from ``/metrics`` by the agent, sampled
from the engine model by the simulator)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineObservation:
    """What the engine reported at ``at`` (``time.monotonic()``); ``None`` where the metric is absent."""

    at: float
    running: int | None
    waiting: int | None
    kv_usage: float | None
    preemptions_total: float | None
    num_gpu_blocks: int | None = None  # from ``vllm:cache_config_info`` labels (the engine's true KV size)
    prefix_queries_total: float | None = None  # vllm:prefix_cache_queries / _hits (tokens)
    prefix_hits_total: float | None = None
