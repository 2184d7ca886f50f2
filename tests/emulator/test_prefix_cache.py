"""The emulator's prefix cache: vLLM's flags and its two counters, on the real HTTP API."""

from __future__ import annotations

import httpx
import openai
import pytest

from blockctl_agents.emulator.__main__ import parse_args
from blockctl_agents.emulator.app import create_app
from tests.conftest import serve_app
from tests.emulator.prom import parse, value


def test_prefix_caching_is_on_by_default_and_has_vllm_s_flags() -> None:
    assert parse_args([])[0].enable_prefix_caching is True
    assert parse_args(["--no-enable-prefix-caching"])[0].enable_prefix_caching is False
    assert parse_args(["--enable-prefix-caching"])[0].enable_prefix_caching is True


@pytest.mark.parametrize("caching", [True, False])
async def test_a_shared_prefix_is_counted_as_vllm_counts_it(caching: bool) -> None:
    app = create_app(enable_prefix_caching=caching, block_size=16)
    shared = list(range(1000, 1040))  # 40 tokens: 2 full blocks of 16
    prompts = [[*shared, 1, 2, 3], [*shared, 4, 5], [*shared, 4, 5]]
    async with serve_app(app) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused") as client:
            for p in prompts:  # one at a time: each finds what the earlier ones left cached
                await client.completions.create(model="emulated", prompt=p, max_tokens=3,
                                                extra_body={"ignore_eos": True})
        async with httpx.AsyncClient() as http:
            s = parse((await http.get(f"{url}/metrics")).text)
    # 42 tokens = 2 full blocks; the third prompt repeats the second, but its last token is always computed.
    expected = [0, 32, 32] if caching else [0, 0, 0]
    assert value(s, "vllm:prefix_cache_queries_total") == (sum(map(len, prompts)) if caching else 0)
    assert value(s, "vllm:prefix_cache_hits_total") == sum(expected)
