"""The agent's HTTP surface when its engine is down: auth, clear 503s in OpenAI's error shape, 400s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from blockctl_agents.predictor.app import create_app
from tests.conftest import free_port, serve_app

from .helpers import PROFILE, TOKEN, settings

AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def agent() -> AsyncIterator[httpx.AsyncClient]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = create_app(settings(dead, scrape_interval_s=0.05), PROFILE.model)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict"),
        ("GET", "/load"),
        ("GET", "/state"),
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
    ],
)
async def test_guarded_routes_need_the_token(agent: httpx.AsyncClient, method: str, path: str) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        resp = await agent.request(method, path, headers=headers, json={})
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"


async def test_predict_and_load_say_503_with_the_reason_while_the_engine_is_down(agent: httpx.AsyncClient) -> None:
    await asyncio.sleep(0.2)  # a few scrapes: each one is refused
    for resp in (await agent.post("/predict", headers=AUTH, json={"prompt_tokens": 100, "predicted_output_tokens": 5}),
                 await agent.get("/load", headers=AUTH)):
        assert resp.status_code == 503
        err = resp.json()["error"]
        assert err["code"] == "engine_unhealthy" and err["message"] == "engine unhealthy: refuses connections"
    assert (await agent.get("/state", headers=AUTH)).status_code == 200


def _metrics_only_engine() -> Starlette:
    async def metrics(request: Request) -> Response:
        return PlainTextResponse("vllm:num_requests_running 0\n")

    return Starlette(routes=[Route("/metrics", metrics)])


async def test_predict_and_load_answer_from_the_model_alone() -> None:
    async with serve_app(_metrics_only_engine()) as engine_url:
        app = create_app(settings(engine_url, scrape_interval_s=0.05), PROFILE.model)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as agent:
            resp = await agent.post("/predict", headers=AUTH,
                                    json={"prompt_tokens": 100, "predicted_output_tokens": 50})
            load = (await agent.get("/load", headers=AUTH)).json()
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {
        "instance",
        "ttft_s",
        "e2e_s",
        "queue_s",
        "prefill_s",
        "running",
        "waiting",
        "outstanding",
        "kv_free_blocks",
        "kv_total_blocks",
        "waiting_prompt_blocks",
        "recent_requests",
    }
    assert body["instance"] == "inst-0" and 0 < body["ttft_s"] < body["e2e_s"]
    assert body["kv_free_blocks"] == body["kv_total_blocks"] == PROFILE.engine_defaults().num_gpu_blocks
    assert set(body) - set(load) == {"ttft_s", "e2e_s", "queue_s", "prefill_s"}
    assert body["prefill_s"] == 0.0  # no block hashes asked about: no cache miss to price


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt_tokens": 0, "predicted_output_tokens": 5},
        {"prompt_tokens": "5", "predicted_output_tokens": 5},
        {"prompt_tokens": 5},
        [1, 2],
        {"prompt_tokens": 10**6, "predicted_output_tokens": 5},
    ],
)
async def test_predict_rejects_bad_bodies(agent: httpx.AsyncClient, payload: object) -> None:
    resp = await agent.post("/predict", headers=AUTH, json=payload)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_engine_down_is_a_clear_503(agent: httpx.AsyncClient) -> None:
    body = {"model": "m", "prompt": "hello", "max_tokens": 5}
    resp = await agent.post("/v1/completions", headers=AUTH, json=body)
    assert resp.status_code == 503 and resp.headers["x-blockctl-unstarted"]  # safe to send elsewhere
    err = resp.json()["error"]
    assert err["code"] == "engine_unavailable" and "request not run" in err["message"]
    assert (await agent.get("/v1/models", headers=AUTH)).status_code == 503
    health = await agent.get("/health")
    assert health.status_code == 503 and health.json()["engine"]["healthy"] is False
    state = (await agent.get("/state", headers=AUTH)).json()
    assert state["outstanding"] == 0
    metrics = (await agent.get("/metrics")).text
    assert "blockctl_agent_engine_scrape_failures_total" in metrics


async def test_invalid_body_is_a_400_before_the_engine(agent: httpx.AsyncClient) -> None:
    resp = await agent.post("/v1/chat/completions", headers=AUTH, content=b"{not json")
    assert resp.status_code == 400 and "JSON" in resp.json()["error"]["message"]
    resp = await agent.post(
        "/v1/completions", headers={**AUTH, "x-blockctl-predicted-output-tokens": "x"}, json={"prompt": "hi"}
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-blockctl-predicted-output-tokens"
    bad_quantiles = {**AUTH, "x-blockctl-predicted-output-quantiles": "10,0,30"}
    resp = await agent.post("/v1/completions", headers=bad_quantiles, json={"prompt": "hi"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-blockctl-predicted-output-quantiles"
    state = (await agent.get("/state", headers=AUTH)).json()
    assert state["totals"]["requests"] == 0
