"""An engine that fails mid-request: a stream that breaks, a reply that never comes (fake engine at the seam)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from blockctl_agents.predictor.app import create_app
from tests.conftest import serve_app

from .helpers import PROFILE, TOKEN, settings

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _broken_engine() -> Starlette:
    async def completions(request: Request) -> Response:
        body = json.loads(await request.body())

        async def three_tokens_then_crash() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f'data: {{"choices": [{{"index": 0, "text": "t{i}", "finish_reason": null}}]}}\n\n'.encode()
                await asyncio.sleep(0.01)
            raise RuntimeError("engine died")  # uvicorn drops the connection mid-body

        if body.get("stream"):
            return StreamingResponse(three_tokens_then_crash(), media_type="text/event-stream")
        raise RuntimeError("engine died before replying")  # uvicorn answers 500

    async def metrics(request: Request) -> Response:
        return PlainTextResponse("vllm:num_requests_running 0\n")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/metrics", metrics)])


@pytest.fixture
async def agent() -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(_broken_engine()) as engine_url:
        app = create_app(settings(engine_url), PROFILE.model)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
            yield client


async def test_a_stream_that_breaks_ends_with_an_error_event(agent: httpx.AsyncClient) -> None:
    body = {"prompt": "hi", "max_tokens": 10, "stream": True}
    async with agent.stream("POST", "/v1/completions", json=body) as resp:
        assert resp.status_code == 200
        text = (await resp.aread()).decode()
    events = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
    assert [e["choices"][0]["text"] for e in events[:3]] == ["t0", "t1", "t2"]
    assert events[-1]["error"]["code"] == "engine_error"
    state = (await agent.get("/state")).json()
    assert state["outstanding"] == 0 and state["totals"]["failed"] == 1 and state["totals"]["completed"] == 0
    assert state["errors"]["e2e"]["count"] == 0  # a failed request is not scored


async def test_an_engine_error_reply_is_passed_through_and_not_scored(agent: httpx.AsyncClient) -> None:
    resp = await agent.post("/v1/completions", json={"prompt": "hi", "max_tokens": 10})
    assert resp.status_code == 500
    state = (await agent.get("/state")).json()
    assert state["totals"]["failed"] == 1 and state["errors"]["e2e"]["count"] == 0


def _lingering_engine() -> Starlette:
    """Streams two tokens and [DONE], then keeps the connection open for a while before it ends the body."""

    async def completions(request: Request) -> Response:
        async def tokens_done_then_linger() -> AsyncIterator[bytes]:
            for i in range(2):
                yield f'data: {{"choices": [{{"index": 0, "text": "t{i}", "finish_reason": null}}]}}\n\n'.encode()
            yield b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}\n\n'
            yield b"data: [DONE]\n\n"
            await asyncio.sleep(1.0)

        return StreamingResponse(tokens_done_then_linger(), media_type="text/event-stream")

    async def metrics(request: Request) -> Response:
        return PlainTextResponse("vllm:num_requests_running 0\n")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/metrics", metrics)])


async def test_a_client_that_closes_right_after_done_is_counted_a_success() -> None:
    async with serve_app(_lingering_engine()) as engine_url:
        app = create_app(settings(engine_url), PROFILE.model)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
            body = {"prompt": "hi", "max_tokens": 10, "stream": True}
            async with client.stream("POST", "/v1/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    if line == "data: [DONE]":
                        break  # and close at once, as blockctl's load generator does
            for _ in range(100):
                state = (await client.get("/state")).json()
                if state["outstanding"] == 0:
                    break
                await asyncio.sleep(0.02)
    assert state["outstanding"] == 0
    assert state["totals"]["completed"] == 1 and state["totals"]["failed"] == 0
