"""Parse an engine's vLLM-style Prometheus ``/metrics`` into the few numbers the agent reconciles with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from blockctl.predict.observation import EngineObservation

# vLLM renamed the KV metric in V1; either is accepted (both are fractions in [0, 1] despite the name).
_KV_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_PREFIX = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")
_WANTED = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:num_preemptions_total", *_KV_NAMES,
           *_PREFIX)
_PREFIXES = (*(f"{name}{{" for name in _WANTED), *(f"{name} " for name in _WANTED), "vllm:cache_config_info{")


def parse_metrics(text: str, at: float) -> EngineObservation:
    """Sum each wanted metric over its label sets; other families and comments are ignored.

    The exposition is read by ``prometheus_client``'s text parser (label escaping, exponents, ``NaN``),
    fed only the sample lines of the families wanted: a vLLM /metrics runs to hundreds of histogram lines
    the agent never reads, and parsing them all costs ~25x more (``blockctl bench exposition``). A line
    the parser refuses is skipped, as any line of a family the agent does not read.
    """
    lines = [line for line in text.split("\n") if line.startswith(_PREFIXES)]
    sums: dict[str, float] = {}
    blocks: int | None = None
    for sample in _samples(lines):
        if sample.name == "vllm:cache_config_info":
            raw = sample.labels.get("num_gpu_blocks", "")
            blocks = int(raw) if raw.isdigit() and int(raw) > 0 else blocks
        elif sample.name in _WANTED:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    kv = next((sums[n] for n in _KV_NAMES if n in sums), None)
    running = sums.get("vllm:num_requests_running")
    waiting = sums.get("vllm:num_requests_waiting")
    return EngineObservation(
        at=at,
        running=None if running is None or running != running else round(running),
        waiting=None if waiting is None or waiting != waiting else round(waiting),
        kv_usage=kv,
        preemptions_total=sums.get("vllm:num_preemptions_total"),
        num_gpu_blocks=blocks,
        prefix_queries_total=sums.get(_PREFIX[0]),
        prefix_hits_total=sums.get(_PREFIX[1]),
    )


def _samples(lines: list[str]) -> Iterator[Sample]:
    """The samples of ``lines``; when one is malformed, the others still count (parsed one by one)."""
    try:
        families = list(text_string_to_metric_families("\n".join(lines)))
    except ValueError:
        families = []
        for line in lines:
            with contextlib.suppress(ValueError):
                families += text_string_to_metric_families(line)
    for family in families:
        yield from family.samples
