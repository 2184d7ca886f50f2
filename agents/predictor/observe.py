"""Parse an engine's vLLM-style Prometheus ``/metrics`` into the few numbers the agent reconciles with."""

from __future__ import annotations

from dataclasses import dataclass

# vLLM renamed the KV metric in V1; either is accepted (both are fractions in [0, 1] despite the name).
_KV_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_PREFIX = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")
_WANTED = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:num_preemptions_total", *_KV_NAMES,
           *_PREFIX)


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


def parse_metrics(text: str, at: float) -> EngineObservation:
    """Sum each wanted metric over its label sets; unknown lines and comments are ignored."""
    sums: dict[str, float] = {}
    blocks: int | None = None
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        if line.startswith("vllm:cache_config_info{"):
            blocks = _label_int(line, "num_gpu_blocks")
            continue
        name_end = len(line)
        for sep in ("{", " "):
            i = line.find(sep)
            if 0 <= i < name_end:
                name_end = i
        name = line[:name_end]
        if name not in _WANTED:
            continue
        try:
            rest = line[name_end:]
            if rest.startswith("{"):
                rest = rest[rest.rindex("}") + 1 :]
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        sums[name] = sums.get(name, 0.0) + value
    kv = next((sums[n] for n in _KV_NAMES if n in sums), None)
    running = sums.get("vllm:num_requests_running")
    waiting = sums.get("vllm:num_requests_waiting")
    return EngineObservation(
        at=at,
        running=None if running is None else round(running),
        waiting=None if waiting is None else round(waiting),
        kv_usage=kv,
        preemptions_total=sums.get("vllm:num_preemptions_total"),
        num_gpu_blocks=blocks,
        prefix_queries_total=sums.get(_PREFIX[0]),
        prefix_hits_total=sums.get(_PREFIX[1]),
    )


def _label_int(line: str, label: str) -> int | None:
    key = f'{label}="'
    i = line.find(key)
    if i < 0:
        return None
    value = line[i + len(key) : line.find('"', i + len(key))]
    return int(value) if value.isdigit() and int(value) > 0 else None
