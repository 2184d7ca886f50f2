"""The agent's shadow prefix cache, from what it proxied, against the emulator's own counters; and /predict
pricing a prompt whose prefix the instance holds."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import openai
import pytest

from blockctl.engine.prefixcache import block_hashes
from blockctl.predict.tracker import Tracked
from blockctl.tokens import get_counter
from blockctl_agents.emulator.app import create_app as create_emulator
from blockctl_agents.predictor.app import create_app
from blockctl_agents.predictor.core import AgentCore
from tests.conftest import serve_app

from .helpers import PROFILE, TOKEN, settings

AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.mark.slow
async def test_the_shadow_counts_the_hits_the_engine_counts_and_the_what_if_uses_them() -> None:
    system = " ".join(["the quick brown fox jumps over the lazy dog"] * 150)  # ~1350 tokens
    prompts = [f"{system} question {q}" for q in ("one", "two", "three", "one")]
    async with serve_app(create_emulator(seed=1)) as engine_url:
        app = create_app(settings(engine_url, scrape_interval_s=0.05), PROFILE.model)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as agent:
            oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
            ids = get_counter().encode(prompts[1])
            body = {"prompt_tokens": len(ids), "predicted_output_tokens": 5}
            cold = (await agent.post("/predict", json={**body, "block_hashes": block_hashes(ids, 16)})).json()
            for p in prompts:  # one at a time, as the test compares counters request by request in total
                await oai.completions.create(model="emulated", prompt=p, max_tokens=5,
                                             extra_body={"ignore_eos": True})
            warm = (await agent.post("/predict", json={**body, "block_hashes": block_hashes(ids, 16)})).json()
            plain = (await agent.post("/predict", json=body)).json()
            load = (await agent.post("/load", json={**body, "block_hashes": block_hashes(ids, 16)})).json()
            bad = await agent.post("/predict", json={**body, "block_hashes": "nope"})
            await oai.close()
            for _ in range(100):  # the agent scrapes the engine's counters every 50 ms
                state = (await agent.get("/state")).json()["prefix_cache"]
                if state["engine_queries"] == state["shadow_queries"]:
                    break
                await asyncio.sleep(0.05)
            metrics = (await agent.get("/metrics")).text
    assert state["shadow_hits"] > 3 * 1300 and state["shadow_hits"] == state["engine_hits"]
    assert state["agreement"] == 1.0 and state["held_requests"] == 0
    exposed = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("blockctl_agent_prefix_shadow_")}
    assert exposed["blockctl_agent_prefix_shadow_agreement"] == 1.0
    assert exposed["blockctl_agent_prefix_shadow_hits_total"] == state["shadow_hits"]
    assert warm["ttft_s"] < 0.5 * cold["ttft_s"] and warm["ttft_s"] < 0.5 * plain["ttft_s"]
    # the cost of prefilling what the cache lacks: the whole prompt cold, its last partial block warm
    assert cold["prefill_s"] > 10 * warm["prefill_s"] > 0.0 and plain["prefill_s"] == 0.0
    assert (cold["prefix_hit_tokens"], warm["prefix_hit_tokens"]) == (0, load["prefix_hit_tokens"])
    assert warm["block_size"] == 16 and "prefix_hit_tokens" not in plain
    assert load["prefix_hit_tokens"] == (len(ids) - 1) // 16 * 16 and load["block_size"] == 16
    assert bad.status_code == 400 and "block_hashes" in bad.json()["error"]["message"]


def test_the_agent_counts_a_prompt_its_requests_share_once() -> None:
    """Two requests decode with one 1,600-token prompt on a cache that holds it about twice; a third with the
    same prompt fits beside them (the engine holds the prompt once), which the agent's what-if must see."""
    cfg = dataclasses.replace(PROFILE.engine_defaults(), num_gpu_blocks=230)
    core = AgentCore(dataclasses.replace(settings("http://127.0.0.1:1"), engine_config=cfg), PROFILE.model)
    system = list(range(5000, 6600))
    now = 100.0
    for i in range(2):
        t = Tracked(f"r{i}", now - 2, 1610, 200, stream=True)
        core.admit(t, now - 2, dispatched=(0.1, 3.0))
        core.cache_prompt(t.req_id, 1610, block_hashes([*system, *range(10 * i, 10 * i + 10)], 16)[:100])
        t.produced, t.first_token_at, t.last_token_at = 50, now - 1.5, now - 0.01
    assert core.shadow.shared_blocks == 100
    hashes = block_hashes([*system, *range(90, 100)], 16)[:100]
    told, _ = core.predict(1610, 200, now, hashes)
    assert told.prefix_hit == 1600 and told.queue_s == 0.0
    blind_core = AgentCore(dataclasses.replace(settings("http://127.0.0.1:1"), engine_config=cfg), PROFILE.model)
    for i in range(2):  # the same two requests, their prompts not hashed: no sharing known
        t = Tracked(f"r{i}", now - 2, 1610, 200, stream=True)
        blind_core.admit(t, now - 2, dispatched=(0.1, 3.0))
        t.produced, t.first_token_at, t.last_token_at = 50, now - 1.5, now - 0.01
    blind, _ = blind_core.predict(1610, 200, now)
    assert blind.queue_s > 1.0  # counted apart, the prompts fill the cache: it waits for one to finish
