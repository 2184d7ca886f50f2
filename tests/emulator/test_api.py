"""The emulator speaks vLLM's OpenAI API: the real ``openai`` client (sync and async, streaming and not)."""

from __future__ import annotations

import httpx
import openai
import pytest
from starlette.applications import Starlette

from blockctl_agents.emulator.app import create_app
from tests.conftest import serve_app, serve_app_in_thread


def _app(**kw: object) -> Starlette:
    return create_app(max_num_seqs=16, **kw)  # type: ignore[arg-type]


def test_sync_client_completions_and_chat() -> None:
    with serve_app_in_thread(_app()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["emulated"]
        done = client.completions.create(
            model="emulated", prompt="Say something", max_tokens=7, extra_body={"ignore_eos": True}
        )
        assert done.usage is not None
        assert done.usage.completion_tokens == 7 and done.usage.prompt_tokens == 2
        assert done.choices[0].finish_reason == "length"
        assert len(done.choices[0].text.split()) == 7
        chat = client.chat.completions.create(
            model="emulated", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
            extra_body={"ignore_eos": True},
        )
        assert chat.choices[0].message.role == "assistant"
        assert chat.usage is not None and chat.usage.completion_tokens == 5
        stream = client.chat.completions.create(
            model="emulated", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True,
            extra_body={"ignore_eos": True},
        )
        deltas = [c.choices[0].delta.content for c in stream if c.choices]
        assert deltas[0] == "" and len(deltas) == 5  # the role chunk, then one chunk per token


async def test_async_streaming_completion_with_usage() -> None:
    async with serve_app(_app()) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        stream = await client.completions.create(
            model="emulated", prompt="Tell me", max_tokens=6, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        chunks = [c async for c in stream]
        token_chunks = [c for c in chunks if c.choices]
        assert len(token_chunks) == 6
        assert [c.choices[0].finish_reason for c in token_chunks] == [None] * 5 + ["length"]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].usage.total_tokens == 6 + 2
        assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-")
        await client.close()


async def test_async_chat_non_streaming_natural_length_is_stable() -> None:
    async with serve_app(_app()) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        messages = [{"role": "user", "content": "Answer briefly: yes or no?"}]
        first = await client.chat.completions.create(model="emulated", messages=messages)  # type: ignore[arg-type]
        again = await client.chat.completions.create(model="emulated", messages=messages)  # type: ignore[arg-type]
        assert first.choices[0].finish_reason == "stop"
        assert first.usage is not None and again.usage is not None
        assert first.usage.completion_tokens == again.usage.completion_tokens
        assert first.choices[0].message.content == again.choices[0].message.content
        capped = await client.chat.completions.create(
            model="emulated", messages=messages, max_tokens=1  # type: ignore[arg-type]
        )
        assert capped.choices[0].finish_reason == "length" and capped.usage is not None
        assert capped.usage.completion_tokens == 1
        await client.close()


async def test_health_tokenize_version_and_unknown_model() -> None:
    async with serve_app(_app()) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).status_code == 200
        tok = (await http.post("/tokenize", json={"prompt": "hello world"})).json()
        assert tok["count"] == 2 and tok["tokens"] == [15339, 1917] and tok["max_model_len"] == 4096
        chat_body = {"messages": [{"role": "user", "content": "hi"}]}
        chat_tok = (await http.post("/tokenize", json=chat_body)).json()
        assert chat_tok["count"] > 2
        assert (await http.post("/tokenize", json={"prompt": 3})).status_code == 400
        assert "emulator" in (await http.get("/version")).json()["version"]
        resp = await http.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"})
        assert resp.status_code == 404 and resp.json()["error"]["param"] == "model"
        missing = await http.get("/v1/nothing")
        assert missing.status_code == 404 and "error" in missing.json()


BAD_BODIES: list[tuple[str, bytes, str | None]] = [
    ("/v1/completions", b'{"prompt": "x", "max_tokens": -1}', "max_tokens"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": "ten"}', "max_tokens"),
    ("/v1/completions", b'{"max_tokens": 3}', "prompt"),
    ("/v1/completions", b'{"prompt": "x", "n": 3}', "n"),
    ("/v1/completions", b"{not json", None),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 5000}', "max_tokens"),
    ("/v1/completions", b'{"prompt": [1, 2, 3], "max_tokens": 4094}', "max_tokens"),
    ("/v1/completions", b'{"prompt": [' + b"7, " * 4095 + b"7]}", "prompt"),
    ("/v1/chat/completions", b'{"messages": "hi"}', "messages"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "stream": 1}', "stream"),
]


async def test_bad_bodies_get_openai_400s() -> None:
    async with serve_app(_app()) as url, httpx.AsyncClient(base_url=url) as http:
        for path, body, param in BAD_BODIES:
            resp = await http.post(path, content=body, headers={"content-type": "application/json"})
            assert resp.status_code == 400, (body[:60], resp.text)
            err = resp.json()["error"]
            assert err["type"] == "invalid_request_error", body[:60]
            assert err["param"] == param and err["message"], body[:60]
        # the server is still healthy and serving after all of them
        ok = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert ok.status_code == 200


async def test_openai_client_raises_bad_request() -> None:
    async with serve_app(_app()) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="maximum context length"):
            await client.completions.create(model="emulated", prompt="x", max_tokens=10_000)
        await client.close()


async def test_prompt_larger_than_kv_cache_is_a_400() -> None:
    async with serve_app(_app(num_gpu_blocks_override=4, block_size=16)) as url, httpx.AsyncClient() as http:
        resp = await http.post(f"{url}/v1/completions", json={"prompt": [5] * 100, "max_tokens": 2})
        assert resp.status_code == 400 and "KV blocks" in resp.json()["error"]["message"]


async def test_startup_delay_gates_health_and_api() -> None:
    async with serve_app(_app(startup_delay=30.0)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).status_code == 503
        resp = await http.post("/v1/completions", json={"prompt": "x"})
        assert resp.status_code == 503 and resp.json()["error"]["type"] == "server_error"
