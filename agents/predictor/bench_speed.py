"""Speed of the agent's prediction function on a synthetic but realistic in-flight table."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from blockctl.bench.workloads import load_workload
from blockctl.engine.profile import load_profile
from blockctl.predict.lengths import prior
from blockctl.predict.tracker import Tracked
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.settings import AgentSettings


@dataclass(frozen=True, slots=True)
class SpeedResult:
    predictions: int
    p50_us: float
    p99_us: float
    mean_us: float
    view_p50_us: float  # of which: building the engine view from the table
    running: int  # as the agent's view classified the synthetic table
    waiting: int


def synthetic_core(
    running: int, waiting: int, *, profile: str, seed: int = 0, now: float = 1000.0, distributions: bool = False
) -> AgentCore:
    """An agent whose table holds ``running`` streaming requests part-way through (ShareGPT-like lengths)
    and ``waiting`` more that have produced nothing yet; with ``distributions`` each length is the prior
    distribution at that mean (``blockctl.predict.lengths``), as the agent keeps for a tagger's number."""
    prof = load_profile(profile)
    settings = AgentSettings("http://127.0.0.1:1", "bench", prof.name, prof.engine_defaults())
    core = AgentCore(settings, prof.model)
    items = load_workload("synthetic-sharegpt", num_requests=running + waiting, seed=seed)
    rng = random.Random(seed)
    for i, item in enumerate(items):
        arrival = now - 30.0 + i * 0.01
        t = Tracked(f"r{i}", arrival, item.prompt_tokens, item.output_tokens, stream=True,
                    length_dist=prior(item.output_tokens) if distributions else None)
        if i < running:
            t.produced = rng.randint(1, item.output_tokens)
            t.first_token_at, t.last_token_at = arrival + 0.2, now - 0.01
        core.tracker.add(t)
    return core


def time_predictions(core: AgentCore, n: int, *, now: float = 1000.0, seed: int = 1) -> SpeedResult:
    """Time ``n`` predictions for new ShareGPT-like requests against ``core``'s table (nothing is added)."""
    items = load_workload("synthetic-sharegpt", num_requests=n, seed=seed)
    for item in items[: min(20, n)]:  # warm-up
        core.predict(item.prompt_tokens, item.output_tokens, now)
    totals, views = [], []
    for item in items:
        t0 = time.perf_counter()
        core.view(now)
        t1 = time.perf_counter()
        core.predict(item.prompt_tokens, item.output_tokens, now)
        t2 = time.perf_counter()
        views.append(t1 - t0)
        totals.append(t2 - t1)
    arr = np.array(totals) * 1e6
    view = core.view(now)
    return SpeedResult(
        predictions=n,
        p50_us=float(np.percentile(arr, 50)),
        p99_us=float(np.percentile(arr, 99)),
        mean_us=float(arr.mean()),
        view_p50_us=float(np.percentile(np.array(views) * 1e6, 50)),
        running=len(view.running),
        waiting=len(view.waiting),
    )


async def measure_agent_process(
    agent_url: str, headers: dict[str, str], agent_pid: int, *, inflight: int, predictions: int
) -> dict[str, float]:
    """RSS of a live agent process holding ``inflight`` requests, and its /predict latency over HTTP."""
    import asyncio

    import httpx
    import psutil

    items = load_workload("synthetic-sharegpt", num_requests=inflight, seed=2)
    async with httpx.AsyncClient(
        base_url=agent_url, headers=headers, timeout=30.0, limits=httpx.Limits(max_connections=inflight + 8)
    ) as client:
        body = {"max_tokens": 2000, "ignore_eos": True, "stream": False}

        async def hold(i: int) -> None:
            item = items[i]
            prompt = [1] * item.prompt_tokens
            await client.post(
                "/v1/completions",
                json={**body, "prompt": prompt},
                headers={"x-blockctl-predicted-output-tokens": str(item.output_tokens)},
            )

        tasks = [asyncio.create_task(hold(i)) for i in range(inflight)]
        try:
            for _ in range(200):
                load = (await client.get("/load")).json()
                if load["outstanding"] >= inflight:
                    break
                await asyncio.sleep(0.05)
            lat = []
            for i in range(predictions):
                t0 = time.perf_counter()
                resp = await client.post(
                    "/predict", json={"prompt_tokens": 200 + i % 500, "predicted_output_tokens": 250}
                )
                lat.append(time.perf_counter() - t0)
                resp.raise_for_status()
            rss = psutil.Process(agent_pid).memory_info().rss
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    ms = np.array(lat) * 1e3
    return {
        "agent_rss_mb": rss / 2**20,
        "inflight": float(load["outstanding"]),
        "http_predict_p50_ms": float(np.percentile(ms, 50)),
        "http_predict_p99_ms": float(np.percentile(ms, 99)),
    }
