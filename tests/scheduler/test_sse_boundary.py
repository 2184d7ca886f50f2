"""A stream that breaks mid-event ends with an error event that starts on an event boundary, through the
real agent and through the real scheduler in front of it (the engine is a fake that dies half-way through an
event), and the framing that makes it so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from blockctl.cluster.state import ensure_token
from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.scheduler.app import SchedulerSettings, create_app
from blockctl.sse import EventFramer
from blockctl_agents.predictor.app import create_app as create_agent
from blockctl_agents.predictor.settings import AgentSettings
from tests.conftest import serve_app
from tests.scheduler.fakes import write_cluster


def _event(text: str) -> bytes:
    chunk = {"id": "c", "object": "text_completion", "created": 0, "model": "m",
             "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _engine_dying_mid_event() -> Starlette:
    async def completions(request: Request) -> Response:
        async def two_events_and_a_half() -> AsyncIterator[bytes]:
            yield _event("one") + _event("two")[:10]  # a chunk that ends inside the second event
            await asyncio.sleep(0.01)
            yield _event("two")[10:] + _event("three")[:25]
            await asyncio.sleep(0.01)
            raise RuntimeError("engine died mid-event")  # uvicorn drops the connection mid-body

        return StreamingResponse(two_events_and_a_half(), media_type="text/event-stream")

    async def metrics(request: Request) -> Response:
        return PlainTextResponse("vllm:num_requests_running 0\n")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/metrics", metrics)])


async def _read(url: str, key: str) -> list[str]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    got: list[str] = []
    try:
        with pytest.raises(openai.APIError, match=r"broke|failed while streaming"):
            stream = await client.completions.create(model="m", prompt="hi", max_tokens=5, stream=True)
            async for chunk in stream:
                got.append(chunk.choices[0].text)
    finally:
        await client.close()
    return got


async def test_error_event_after_a_break_mid_event_is_its_own_event(tmp_path: Path) -> None:
    token = ensure_token(tmp_path)
    profile = load_profile(DEFAULT_PROFILE)
    async with serve_app(_engine_dying_mid_event()) as engine:
        settings = AgentSettings(engine, "a", profile.name, profile.engine_defaults(), token=token, connect_retries=0)
        async with serve_app(create_agent(settings, profile.model)) as agent:
            assert await _read(agent, token) == ["one", "two"]  # the half event is dropped, not glued
            write_cluster(tmp_path, {"a": agent})
            sched = create_app(SchedulerSettings(state_dir=tmp_path, seed=0, poll_s=0.02, max_retries=0))
            async with serve_app(sched) as url:
                assert await _read(url, "unused") == ["one", "two"]


def test_framer_sends_whole_events_and_holds_the_rest() -> None:
    f = EventFramer()
    whole = b"data: 1\n\n"
    assert f.feed(whole) is whole  # the fast path: no copy
    assert f.feed(b"data: 2\n\nda") == b"data: 2\n\n" and f.held == 2
    assert f.feed(b"ta: 3\n") == b"" and f.held == 8
    assert f.feed(b"\ndata: 4\n\n") == b"data: 3\n\ndata: 4\n\n" and f.held == 0
    assert f.feed(b"data: 5\r\n\r\ndata: 6") == b"data: 5\r\n\r\n"
    assert f.flush() == b"data: 6" and f.held == 0
    big = b"x" * ((1 << 20) + 1)  # not SSE as expected: passed through rather than held without bound
    assert f.feed(big) == big and f.held == 0
