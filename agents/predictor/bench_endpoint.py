"""Accuracy of a live agent in front of any engine: closed-loop load with a varying number in flight, or
open-loop Poisson arrivals.

Requests (exact lengths: ``ignore_eos`` + ``max_tokens`` = the true length, told to the agent as the predicted
length, so only the latency model is scored) are sent in phases; each phase keeps a concurrency drawn from
``[lo, hi]`` in flight. Open loop (``qps``): each request is sent at its Poisson arrival time whatever is in
flight, as a service's users send them; the number in flight then follows the arrivals and the engine.
Prompts are random token ids, fresh in every run (the seed fixes the lengths, the phases and the arrival
times, not the ids): an engine keeps a finished prompt's blocks cached, so a second run with the same ids
would be served partly from the cache that the agent, told nothing about it, prices as uncached. Every
request is scored on the prediction ``/predict`` gave at its dispatch.

The constant baseline predicts ``median TTFT`` and ``median TTFT + median TPOT * (tokens - 1)``, both fitted in
hindsight on the same run: what a router that ignores the engine's state would get at best.

``decode`` scores the part after the first token alone (predicted E2E − TTFT against the actual), for the
agent and the constant; with the agent's own split of it (``decode_given_batches`` in its ``/state``: the
step model pricing the steps each request actually ran in), it says how much of the error is the model and
how much the traffic that arrived after the prediction.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import httpx

from blockctl_agents.predictor.bench_accuracy import Outcome, _one, ape_summary, summarize
from blockctl_agents.profiler.endpoint import TOKEN_ID_RANGE

PHASE = 10  # requests per concurrency phase


def workload(n: int, max_model_len: int, seed: int) -> list[tuple[int, int]]:
    """``(prompt_tokens, output_tokens)`` pairs: log-normal lengths scaled to ``max_model_len``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = int(min(0.4 * max_model_len, max(8, rng.lognormvariate(math.log(max_model_len / 8), 0.8))))
        room = max_model_len - prompt - 1
        length = int(min(room, 0.5 * max_model_len, max(8, rng.lognormvariate(math.log(max_model_len / 6), 0.7))))
        out.append((prompt, length))
    return out


async def drive(
    agent_url: str, headers: dict[str, str], requests: Sequence[tuple[int, int]], seed: int, *,
    concurrency: tuple[int, int] = (2, 8), qps: float | None = None,
) -> tuple[list[Outcome], float]:
    """Send every request, each phase keeping a random number in ``concurrency`` in flight, or with ``qps``
    at Poisson arrival times; outcomes in dispatch order and the wall time."""
    rng = random.Random(seed + 1)
    ids_rng = random.Random()  # seeded from the OS: never the ids of an earlier run (module docstring)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=30.0, pool=None)
    lo_id, hi_id = TOKEN_ID_RANGE
    async with httpx.AsyncClient(
        base_url=agent_url, headers=headers, limits=limits, timeout=timeout, trust_env=False
    ) as client:
        models = (await client.get("/v1/models")).raise_for_status().json().get("data") or [{}]
        model = models[0].get("id")
        outcomes: list[Outcome | None] = [None] * len(requests)
        inflight: set[asyncio.Task[None]] = set()
        start = time.perf_counter()

        async def one(i: int, prompt: int, out: int) -> None:
            ids = [ids_rng.randrange(lo_id, hi_id) for _ in range(prompt)]
            try:
                outcomes[i] = await _one(client, model, prompt, out, out, ids)
            except httpx.HTTPError as exc:
                outcomes[i] = Outcome(prompt, out, out, 0.0, 0.0, 0, 0, error=f"/predict: {type(exc).__name__}")

        target, due = concurrency[0], 0.0
        for i, (prompt, out) in enumerate(requests):
            if qps is not None:  # open loop: at its arrival time, whatever is in flight
                due += rng.expovariate(qps)
                if (wait := start + due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                inflight = {t for t in inflight if not t.done()}
            else:
                if i % PHASE == 0:
                    target = rng.randint(*concurrency)
                while len(inflight) >= target:
                    _, pending = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    inflight = set(pending)
            task = asyncio.create_task(one(i, prompt, out))
            inflight.add(task)
            await asyncio.sleep(0)  # let it reach /predict before the next one is considered
        if inflight:
            await asyncio.wait(inflight)
        wall = time.perf_counter() - start
    return [o for o in outcomes if o is not None], wall


def constant_baseline(done: Sequence[Outcome], scored: Sequence[Outcome] | None = None) -> dict[str, Any]:
    """Hindsight constant predictor (see the module docstring) fitted on ``done``, scored like the agent on
    ``scored`` (default: ``done``)."""
    ttfts = [o.ttft_s for o in done if o.ttft_s]
    tpots = [(o.e2e_s - o.ttft_s) / (o.output_tokens - 1) for o in done
             if o.e2e_s and o.ttft_s and o.output_tokens > 1]
    if not ttfts or not tpots:
        return {}
    ttft, tpot = statistics.median(ttfts), statistics.median(tpots)
    part = done if scored is None else scored
    actual_ttft = [o.ttft_s for o in part if o.ttft_s]
    decoding = _decoding(part)
    return {
        "ttft_s": ttft,
        "tpot_s": tpot,
        "e2e": ape_summary([ttft + tpot * (o.output_tokens - 1) for o in part], [o.e2e_s or 0.0 for o in part]),
        "ttft": ape_summary([ttft] * len(actual_ttft), actual_ttft),
        "decode": ape_summary([tpot * (o.output_tokens - 1) for o in decoding], _decode_s(decoding)),
    }


def _decoding(part: Sequence[Outcome]) -> list[Outcome]:
    """The outcomes with a decode to score: a first token and more tokens after it."""
    return [o for o in part if o.ttft_s and o.e2e_s and o.e2e_s > o.ttft_s and o.output_tokens > 1]


def _decode_s(part: Sequence[Outcome]) -> list[float]:
    return [(o.e2e_s or 0.0) - (o.ttft_s or 0.0) for o in part]


def _scored(part: Sequence[Outcome]) -> dict[str, Any]:
    with_ttft = [o for o in part if o.ttft_s]
    return {
        "e2e": ape_summary([o.predicted_e2e_s for o in part], [o.e2e_s or 0.0 for o in part]),
        "ttft": ape_summary([o.predicted_ttft_s for o in with_ttft], [o.ttft_s or 0.0 for o in with_ttft]),
    }


BATCH_BUCKETS = ((0, 1), (2, 3), (4, 5), (6, 8), (9, 1 << 30))


def report(outcomes: Sequence[Outcome], wall_s: float) -> dict[str, Any]:
    """The full accuracy report: overall, by thirds, by batch at dispatch, and the constant baseline."""
    done = [o for o in outcomes if o.error is None and o.e2e_s and o.e2e_s > 0]
    third = max(1, len(done) // 3)
    by_batch = {}
    for lo, hi in BATCH_BUCKETS:
        part = [o for o in done if lo <= o.running_at_dispatch + o.waiting_at_dispatch <= hi]
        if part:
            name = f"{lo}-{hi}" if hi < 1 << 30 else f"{lo}+"
            by_batch[name] = {"n": len(part), **_scored(part)}
    return {
        **summarize(outcomes),
        "wall_s": wall_s,
        "first_third": _scored(done[:third]),
        "last_third": _scored(done[-third:]),
        "after_100": _scored(done[100:]) if len(done) > 100 else None,
        "by_inflight_at_dispatch": by_batch,
        "decode": ape_summary([o.predicted_e2e_s - o.predicted_ttft_s for o in _decoding(done)],
                              _decode_s(_decoding(done))),
        "constant_baseline": constant_baseline(done),
        "constant_baseline_after_100": constant_baseline(done, done[100:]) if len(done) > 100 else None,
    }
