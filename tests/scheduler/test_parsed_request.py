"""The scheduler parses a prompt once: the agents' /predict gets its block hashes (a prefix cache's keys)."""

from __future__ import annotations

from pathlib import Path

import httpx

from blockctl.engine.prefixcache import block_hashes
from blockctl.scheduler.parsed import BLOCK_SIZE, parse_request
from blockctl.tokens import get_counter
from tests.scheduler.fakes import FakeAgent
from tests.scheduler.test_daemon import cluster


def test_a_parsed_request_has_the_counted_tokens_and_their_block_hashes() -> None:
    body = {"prompt": "word " * 100}
    parsed = parse_request(body, get_counter())
    ids = get_counter().encode("word " * 100)
    assert parsed.token_ids == ids and parsed.text == "word " * 100
    assert parsed.hashes_json == str(block_hashes(ids, BLOCK_SIZE)).replace(" ", "").encode()


def test_a_chat_s_earlier_replies_are_counted_and_its_last_message_is_not() -> None:
    counter = get_counter()
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello there"}, {"role": "user", "content": "more"},
                         {"role": "assistant", "content": [{"type": "text", "text": "a b c d"}]},
                         {"role": "assistant", "content": "a prefilled start"}]}
    parsed = parse_request(chat, counter)
    assert parsed.replies == (counter.count("hello there"), counter.count("a b c d"))
    assert parse_request({"prompt": "ASSISTANT: not a message"}, counter).replies == ()
    assert parse_request({"messages": [{"role": "user", "content": "hi"}]}, counter).replies == ()


async def test_predict_carries_the_prompt_s_block_hashes(tmp_path: Path) -> None:
    a, b = FakeAgent("a"), FakeAgent("b", e2e_s=5.0)
    prompt = "the same long system prompt " * 20
    async with cluster(tmp_path, a, b) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": 4})
    assert r.status_code == 200, r.text
    want = block_hashes(get_counter().encode(prompt), BLOCK_SIZE)
    assert len(want) >= 4 and a.predicts[0]["block_hashes"] == b.predicts[0]["block_hashes"] == want


async def test_a_prefix_aware_load_policy_routes_to_the_agent_that_holds_the_prefix(tmp_path: Path) -> None:
    cold, warm = FakeAgent("cold"), FakeAgent("warm")
    warm.prefix_hit_tokens = 96
    prompt = "the same long system prompt " * 20
    async with cluster(tmp_path, cold, warm, policy="cache-aware") as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.headers["x-blockctl-instance"] == "warm" and not cold.forwarded
    assert cold.load_bodies[0]["block_hashes"] == block_hashes(get_counter().encode(prompt), BLOCK_SIZE)
