"""The agent in front of an engine that stalls or loses its caller: sick reports, aborts, drain."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from blockctl_agents.predictor.app import create_app
from tests.conftest import serve_app

from .helpers import PROFILE, TOKEN, settings

AUTH = {"authorization": f"Bearer {TOKEN}"}
PREDICT = {"prompt_tokens": 10, "predicted_output_tokens": 5}


@dataclass
class Engine:
    """A scripted engine: /metrics and replies hang while ``stalled``; counts callers that went away."""

    stalled: bool = False
    gone: int = 0  # requests whose caller disconnected before the reply

    async def _wait_while_stalled(self) -> None:
        while self.stalled:
            await asyncio.sleep(0.01)

    async def metrics(self, request: Request) -> Response:
        await self._wait_while_stalled()
        return PlainTextResponse("vllm:num_requests_running 0\n")

    async def completions(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if body.get("stream"):
            async def tokens() -> AsyncIterator[bytes]:
                for i in range(100):
                    await self._wait_while_stalled()
                    yield f'data: {{"choices": [{{"index": 0, "text": "t{i}", "finish_reason": null}}]}}\n\n'.encode()
                    await asyncio.sleep(0.02)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(tokens(), media_type="text/event-stream")
        for _ in range(500):  # a long non-streamed reply, or until the caller leaves
            if await request.is_disconnected():
                self.gone += 1
                return Response(status_code=499)
            await asyncio.sleep(0.01)
        return JSONResponse({"choices": [{"text": "done"}], "usage": {"completion_tokens": 1}})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/metrics", self.metrics),
                                 Route("/v1/completions", self.completions, methods=["POST"])])


@pytest.fixture
async def stack() -> AsyncIterator[tuple[Engine, httpx.AsyncClient, Starlette]]:
    engine = Engine()
    async with serve_app(engine.app()) as engine_url:
        app = create_app(dataclasses.replace(settings(engine_url, scrape_interval_s=0.05), stall_s=0.3,
                                             drain_s=0.3), PROFILE.model)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
            yield engine, client, app


async def test_a_stalled_engine_is_reported_sick_and_what_waits_there_is_aborted_unstarted(
        stack: tuple[Engine, httpx.AsyncClient, Starlette]) -> None:
    engine, agent, _ = stack
    assert (await agent.post("/predict", json=PREDICT)).status_code == 200
    waiting = asyncio.ensure_future(agent.post("/v1/completions", json={"prompt": "hi", "max_tokens": 5}))
    await asyncio.sleep(0.1)
    engine.stalled = True
    reply = await waiting
    sick = await agent.post("/predict", json=PREDICT)
    engine.stalled = False
    await asyncio.sleep(0.3)
    healed = await agent.post("/predict", json=PREDICT)
    await asyncio.sleep(0.2)
    assert reply.status_code == 503 and "engine unhealthy" in reply.headers["x-blockctl-unstarted"]
    assert engine.gone == 1  # the engine saw its caller leave: the request was aborted there
    assert sick.status_code == 503 and sick.json()["error"]["code"] == "engine_unhealthy"
    assert "no /metrics answer within 0.3 s" in sick.json()["error"]["message"]
    assert healed.status_code == 200


async def test_a_started_stream_on_a_stalled_engine_ends_with_an_error_event(
        stack: tuple[Engine, httpx.AsyncClient, Starlette]) -> None:
    engine, agent, _ = stack
    async with agent.stream("POST", "/v1/completions", json={"prompt": "hi", "max_tokens": 100, "stream": True}) \
            as resp:
        await asyncio.sleep(0.1)
        engine.stalled = True
        text = (await resp.aread()).decode()
    engine.stalled = False
    events = [e for e in text.split("\n\n") if e.startswith("data:")]
    assert 1 <= len(events) < 100 and "engine unhealthy" in json.loads(events[-1][5:])["error"]["message"]


async def test_a_caller_that_leaves_aborts_the_non_streamed_engine_request(
        stack: tuple[Engine, httpx.AsyncClient, Starlette]) -> None:
    engine, agent, _ = stack
    with pytest.raises(httpx.ReadTimeout):
        await agent.post("/v1/completions", json={"prompt": "hi", "max_tokens": 5}, timeout=0.3)
    for _ in range(100):
        if engine.gone:
            break
        await asyncio.sleep(0.02)
    assert engine.gone == 1
    assert (await agent.get("/state")).json()["outstanding"] == 0


async def test_drain_refuses_new_work_and_cuts_what_is_left_at_the_deadline(
        stack: tuple[Engine, httpx.AsyncClient, Starlette]) -> None:
    engine, agent, app = stack
    assert not engine.stalled
    waiting = asyncio.ensure_future(agent.post("/v1/completions", json={"prompt": "hi", "max_tokens": 5}))
    await asyncio.sleep(0.1)
    app.state.begin_drain()
    predict = await agent.post("/predict", json=PREDICT)
    reply = await waiting
    assert predict.status_code == 503 and "shutting down" in predict.json()["error"]["message"]
    assert reply.status_code == 503 and reply.headers["x-blockctl-unstarted"] == "the agent is shutting down"
    for _ in range(100):
        if engine.gone:
            break
        await asyncio.sleep(0.02)
    assert engine.gone == 1
