"""Online tagging latency under open-loop Poisson arrivals, measured through ``OnlineTagger`` on one loop."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blockctl.tagger.online import BatchPredictor, OnlineTagger


@dataclass(frozen=True, slots=True)
class LatencySummary:
    requests: int
    answered: int
    missed_deadline: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_batch: float
    batches: int
    offered_rate: float  # requests/s asked for
    achieved_rate: float  # requests/s actually issued (arrivals over the run)
    cpu_ms_per_batch: float = float("nan")  # the inference thread's CPU time (the other torch threads not included)
    process_cpu_ms_per_request: float = float("nan")  # the whole process's CPU time (every thread) per request
    process_cpu_ms_per_batch: float = float("nan")
    threads: int = 0  # torch CPU threads the run used
    wall_ms_per_batch: float = float("nan")  # inference wall time: longer when the core is shared
    forward: str = ""  # "lean" or "module" for a tagger directory


def summarize(
    latencies_s: Sequence[float | None], *, rate: float, span_s: float, batches: int, mean_batch: float
) -> LatencySummary:
    """Percentiles over answered requests (None = missed its deadline); pure, for testing and reports."""
    answered = np.array([x for x in latencies_s if x is not None], dtype=np.float64) * 1e3
    pct = np.percentile(answered, [50, 90, 99]) if len(answered) else np.array([np.nan] * 3)
    return LatencySummary(
        requests=len(latencies_s),
        answered=len(answered),
        missed_deadline=len(latencies_s) - len(answered),
        p50_ms=float(pct[0]),
        p90_ms=float(pct[1]),
        p99_ms=float(pct[2]),
        max_ms=float(answered.max()) if len(answered) else float("nan"),
        mean_batch=mean_batch,
        batches=batches,
        offered_rate=rate,
        achieved_rate=len(latencies_s) / span_s if span_s > 0 else float("nan"),
    )


async def run(
    model: str | Path | BatchPredictor,
    prompts: Sequence[str],
    *,
    rate: float,
    requests: int,
    max_batch: int = 16,
    max_wait_ms: float = 0.0,
    deadline_ms: float = 1000.0,
    threads: int | None = None,
    seed: int = 0,
    lean: bool = True,
) -> LatencySummary:
    """Issue ``requests`` prompts (cycling ``prompts``) at Poisson ``rate``; time each ``predict`` call.

    The model is loaded and warmed up before the clock starts. Latency is measured from each request's
    arrival to its answer, so queueing behind earlier batches counts.
    """
    tagger = OnlineTagger(
        model, max_batch=max_batch, max_wait_ms=max_wait_ms, deadline_ms=deadline_ms, threads=threads, lean=lean
    )
    await tagger.start()  # loading and warm-up are not timed
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, requests)
    cpu0 = time.process_time()
    latencies: list[float | None] = [None] * requests

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        result = await tagger.predict(prompts[i % len(prompts)])
        latencies[i] = time.perf_counter() - t0 if result is not None else None

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[None]] = []
    try:
        due = start
        for i in range(requests):
            due += float(gaps[i])
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        span = loop.time() - start
        await asyncio.gather(*tasks)
        process_cpu_s = time.process_time() - cpu0  # torch's and the tokenizer's threads, and this loop's
    finally:
        await tagger.close()
    stats = tagger.stats
    summary = summarize(latencies, rate=rate, span_s=span, batches=stats.batches, mean_batch=stats.mean_batch)
    if stats.batches:
        summary = dataclasses.replace(
            summary,
            cpu_ms_per_batch=stats.inference_cpu_s / stats.batches * 1e3,
            wall_ms_per_batch=stats.inference_wall_s / stats.batches * 1e3,
            process_cpu_ms_per_batch=process_cpu_s / stats.batches * 1e3,
        )
    return dataclasses.replace(summary, forward=stats.forward, threads=stats.threads,
                               process_cpu_ms_per_request=process_cpu_s / requests * 1e3)
