"""Under load (queueing, KV pressure, preemption) /metrics agrees with the engine's own state."""

from __future__ import annotations

import asyncio

import httpx
import openai

from blockctl_agents.emulator.app import create_app
from blockctl_agents.emulator.state import Emulator
from tests.conftest import serve_app
from tests.emulator.prom import Samples, parse, value

N, PROMPT, OUTPUT, SEQS = 16, 60, 60, 6


def _gauges_match(s: Samples, emu: Emulator) -> bool:
    """True when the scrape saw exactly the engine's state (no step completed since); asserts equality."""
    if value(s, "blockctl_emulator_steps_total") != emu.runner.metrics.steps:
        return False
    e = emu.runner.engine
    assert value(s, "vllm:num_requests_running", model_name="emulated") == len(e.running)
    assert value(s, "vllm:num_requests_waiting", model_name="emulated") == len(e.waiting)
    assert value(s, "vllm:kv_cache_usage_perc") == e.kv_usage
    assert value(s, "vllm:num_preemptions_total") == e.num_preemptions_total
    assert value(s, "vllm:generation_tokens_total") == emu.runner.metrics.generation_tokens
    return True


async def test_metrics_match_engine_under_load() -> None:
    # 40 blocks of 16 tokens: six running requests of 60 + 60 tokens cannot all fit -> preemption
    app = create_app(max_num_seqs=SEQS, num_gpu_blocks_override=40, max_num_batched_tokens=512)
    emu: Emulator = app.state.emulator
    # clients stream over loopback; the scraper calls the same app in-process, so nothing else runs between
    # the scrape and the comparison and every scrape can be checked exactly
    scraper = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator")
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http, scraper:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")

        async def one(i: int) -> int:  # distinct prompts: no prefix-cache hits relieve the KV pressure
            stream = await client.completions.create(
                model="emulated", prompt=[100 + i] * PROMPT, max_tokens=OUTPUT, stream=True,
                extra_body={"ignore_eos": True},
            )
            return sum([1 async for c in stream if c.choices])

        tasks = [asyncio.create_task(one(i)) for i in range(N)]
        exact, scrapes, max_waiting = 0, 0, 0.0
        while not all(t.done() for t in tasks):
            s = parse((await scraper.get("/metrics")).text)
            scrapes += 1
            assert value(s, "vllm:num_requests_running") <= SEQS
            max_waiting = max(max_waiting, value(s, "vllm:num_requests_waiting"))
            exact += _gauges_match(s, emu)
            await asyncio.sleep(0.01)
        assert [t.result() for t in tasks] == [OUTPUT] * N
        await client.close()
        assert exact >= 0.9 * scrapes and scrapes >= 10 and max_waiting > 0
        s = parse((await http.get("/metrics")).text)
    e = emu.runner.engine
    assert _gauges_match(s, emu)
    assert e.num_preemptions_total > 0 and e.free_blocks == e.num_blocks_total
    assert value(s, "vllm:num_requests_running") == 0 and value(s, "vllm:kv_cache_usage_perc") == 0
    assert value(s, "vllm:prompt_tokens_total") == N * PROMPT
    # counted once per request, at its first admission (re-admissions after preemption are not)
    assert value(s, "vllm:prefix_cache_queries_total") == N * PROMPT
    assert value(s, "vllm:prefix_cache_hits_total") == 0
    assert value(s, "vllm:generation_tokens_total") == N * OUTPUT
    assert value(s, "vllm:request_success_total", finished_reason="length") == N
    assert value(s, "vllm:time_to_first_token_seconds_count") == N
    assert value(s, "vllm:e2e_request_latency_seconds_count") == N
    assert value(s, "vllm:inter_token_latency_seconds_count") == N * (OUTPUT - 1)
    assert value(s, "vllm:time_to_first_token_seconds_bucket", le="+Inf") == N
    assert value(s, "vllm:iteration_tokens_total_count") == value(s, "blockctl_emulator_steps_total")
    # every token computed once (prompt + all but the last output), plus the recomputation after preemptions
    assert value(s, "vllm:iteration_tokens_total_sum") > N * (PROMPT + OUTPUT - 1)
    assert value(s, "vllm:cache_config_info", num_gpu_blocks="40", block_size="16") == 1
