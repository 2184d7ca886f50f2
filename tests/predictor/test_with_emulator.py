"""The agent proxying the real emulator on loopback: streaming and not, tracking, predictions, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from blockctl_agents.emulator.app import create_app as create_emulator
from blockctl_agents.predictor.app import create_app
from blockctl_agents.predictor.bench_accuracy import drive, summarize
from tests.conftest import serve_app

from .helpers import PROFILE, TOKEN, settings

AUTH = {"authorization": f"Bearer {TOKEN}"}


@dataclass
class Stack:
    agent: httpx.AsyncClient
    oai: openai.AsyncOpenAI
    url: str


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with serve_app(create_emulator(seed=1)) as engine_url:
        # The profile's model, not one learned from this (loaded) machine's timings while the test runs: the
        # tests compare predictions made moments apart, which a learning step in between could reorder.
        app = create_app(settings(engine_url, scrape_interval_s=0.1, learn=False), PROFILE.model)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
            oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
            yield Stack(client, oai, url)
            await oai.close()


async def _state(s: Stack) -> dict:  # type: ignore[type-arg]
    return (await s.agent.get("/state")).json()  # type: ignore[no-any-return]


async def test_streaming_completion_is_relayed_and_counted(stack: Stack) -> None:
    stream = await stack.oai.completions.create(
        model="emulated",
        prompt="hello there",
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
        extra_headers={"x-blockctl-predicted-output-tokens": "40"},
    )
    chunks, seen_mid = 0, None
    async for chunk in stream:
        if chunk.choices:
            chunks += 1
        if chunks == 10 and seen_mid is None:
            seen_mid = await _state(stack)
    assert chunks == 40
    assert seen_mid is not None
    (req,) = seen_mid["requests"]
    assert req["stream"] and req["phase"] == "running" and 10 <= req["produced"] <= 40
    assert req["predicted_output_tokens"] == 40 and req["prompt_tokens"] >= 2
    assert 0 < req["ttft_s"] <= req["age_s"]  # the autoscaler's observed P99 TTFT reads these
    after = await _state(stack)
    assert after["outstanding"] == 0 and after["totals"]["completed"] == 1
    ((ago, ttft),) = after["recent_ttfts"]  # a finished request's first token, for the autoscaler
    assert ago > 0 and ttft == pytest.approx(req["ttft_s"], abs=1e-3)
    assert after["errors"]["e2e"]["count"] == 1 and after["errors"]["ttft"]["count"] == 1
    metrics = (await stack.agent.get("/metrics")).text
    assert "blockctl_agent_e2e_relative_error_count 1" in metrics
    assert 'blockctl_agent_calibration_tpot_factor{instance="inst-0"}' in metrics
    assert after["calibration"]["samples"] == 1


async def test_non_streaming_chat_is_tracked_and_scored(stack: Stack) -> None:
    task = asyncio.create_task(
        stack.oai.chat.completions.create(
            model="emulated",
            messages=[{"role": "user", "content": "Say something long."}],
            max_tokens=200,
            extra_body={"ignore_eos": True},
        )
    )
    for _ in range(100):
        state = await _state(stack)
        if state["outstanding"]:
            break
        await asyncio.sleep(0.01)
    (req,) = state["requests"]
    assert not req["stream"] and req["predicted_output_tokens"] == 200  # ignore_eos: the limit is the length
    assert req["predicted_e2e_s"] > 0.5  # 200 decode steps
    resp = await task
    assert resp.usage is not None and resp.usage.completion_tokens == 200
    after = await _state(stack)
    assert after["outstanding"] == 0 and after["errors"]["e2e"]["count"] == 1
    assert after["errors"]["ttft"]["count"] == 0  # unseen without streaming


async def test_predictions_grow_with_in_flight_load_and_metrics_reconcile(stack: Stack) -> None:
    ask = {"prompt_tokens": 500, "predicted_output_tokens": 100}
    idle = (await stack.agent.post("/predict", json=ask)).json()
    assert idle["running"] == idle["outstanding"] == 0
    body = {"model": "emulated", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    async with (
        stack.agent.stream("POST", "/v1/completions", json={**body, "prompt": [7] * 1500}) as r1,
        stack.agent.stream("POST", "/v1/completions", json={**body, "prompt": [7] * 1500}) as r2,
    ):
        it1, it2 = r1.aiter_raw(), r2.aiter_raw()
        await anext(it1)
        await anext(it2)
        await asyncio.sleep(0.4)  # several scrapes
        busy = (await stack.agent.post("/predict", json=ask)).json()
        state = await _state(stack)
    assert busy["running"] == 2 and busy["outstanding"] == 2
    assert busy["e2e_s"] > idle["e2e_s"] and busy["ttft_s"] > idle["ttft_s"]
    assert busy["kv_free_blocks"] < idle["kv_free_blocks"]
    engine = state["engine"]["metrics"]
    assert engine["fresh"] and engine["running"] == 2 and engine["waiting"] == 0
    assert state["preempted_guess"] == 0 and state["hidden_kv_blocks"] == 0
    # closing both streams early releases them from the table as failed
    for _ in range(100):
        after = await _state(stack)
        if after["outstanding"] == 0:
            break
        await asyncio.sleep(0.02)
    assert after["outstanding"] == 0 and after["totals"]["failed"] == 2
    # ... and the engine was told: it aborted both (the agent closed its upstream streams)
    for _ in range(100):
        state = await _state(stack)
        if state["engine"]["metrics"]["running"] == 0:
            break
        await asyncio.sleep(0.05)
    assert state["engine"]["metrics"]["running"] == 0 and state["engine"]["metrics"]["waiting"] == 0


async def test_models_and_health_pass_through(stack: Stack) -> None:
    models = await stack.oai.models.list()
    assert [m.id for m in models.data] == ["emulated"]
    health = (await stack.agent.get("/health")).json()
    assert health["status"] == "ok" and health["engine"]["healthy"] is True


async def test_small_accuracy_run(stack: Stack) -> None:
    reqs = [(p, o, o) for p, o in [(200, 30), (800, 60), (50, 20), (400, 80), (120, 40), (900, 25)] * 2]
    offsets = [i * 0.15 for i in range(len(reqs))]
    outcomes = await drive(stack.url, AUTH, reqs, offsets)
    summary = summarize(outcomes)
    assert summary["completed"] == len(reqs) and summary["failed"] == 0
    assert all(o.tokens == o.output_tokens for o in outcomes)
    e2e = summary["e2e"]
    assert isinstance(e2e, dict) and e2e["n"] == len(reqs)
    # loose: the test machine is shared and everything runs on one event loop here
    assert e2e["mape_pct"] is not None and e2e["mape_pct"] < 35


async def test_small_engine_cache_size_and_preemptions_are_reconciled() -> None:
    # the agent is configured with the profile's KV size; the engine really has 64 blocks (1024 tokens)
    async with serve_app(create_emulator(seed=2, num_gpu_blocks_override=64)) as engine_url:
        app = create_app(settings(engine_url, scrape_interval_s=0.05), PROFILE.model)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
            body = {"model": "emulated", "max_tokens": 500, "ignore_eos": True, "stream": True, "prompt": [5] * 200}

            async def run() -> int:
                n = 0
                async with client.stream("POST", "/v1/completions", json=body) as r:
                    async for _ in r.aiter_raw():
                        n += 1
                return n

            tasks = [asyncio.create_task(run()) for _ in range(3)]  # 3 x 44 blocks > 64: preemption
            seen_preempted = 0
            while not all(t.done() for t in tasks):
                state = (await client.get("/state")).json()
                assert state["kv_total_blocks"] in (64, PROFILE.engine_defaults().num_gpu_blocks)
                seen_preempted = max(seen_preempted, state["preempted_guess"])
                await asyncio.sleep(0.03)
            await asyncio.gather(*tasks)
            state = (await client.get("/state")).json()
    assert state["kv_total_blocks"] == 64 and state["simulated_num_gpu_blocks"] == 64
    assert state["engine"]["metrics"]["preemptions_total"] >= 1
    assert seen_preempted >= 1
    assert state["totals"]["completed"] == 3
