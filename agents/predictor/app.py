"""The agent's HTTP server: OpenAI proxy routes, /predict, /load, /state, /health, /metrics; its lifecycle.

Routes (the contract the scheduler codes against):

* ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``: relayed to the engine.
  Request headers the agent reads: ``x-blockctl-prompt-tokens`` (else it counts with blockctl.tokens),
  ``x-blockctl-predicted-output-tokens`` (else the fallback in tracker.py), ``x-blockctl-predicted-ttft-ms``
  and ``x-blockctl-predicted-e2e-ms`` (the dispatch prediction to score; else it predicts itself), and
  ``x-request-id``. Responses carry ``x-blockctl-instance``. Engine unreachable: 503 (``engine_unavailable``);
  engine failed mid-request: 502 (``engine_error``); both in OpenAI's error JSON.
* ``POST /predict {"prompt_tokens", "predicted_output_tokens"}`` → ``ttft_s``, ``e2e_s``, ``queue_s`` (seconds
  from now, calibrated, see accuracy.Calibration) plus the ``/load`` fields; 400 for a bad body or a
  prompt that cannot fit the engine.
* ``GET /load`` → ``instance``, ``running``, ``waiting``, ``outstanding``, ``kv_free_blocks``,
  ``kv_total_blocks``, ``waiting_prompt_blocks``, ``recent_requests`` (no what-if; cheap).
* ``GET /state``: everything the agent believes (no prompts). ``GET /health``: 200 when the engine answers
  its /health, else 503. ``GET /metrics``: Prometheus text.

Auth: when a token is configured, every route except ``/health`` and ``/metrics`` needs
``Authorization: Bearer <token>`` (the scheme in any case, RFC 9110) — the OpenAI routes too, so an agent on a
GPU host's network port is not an open inference endpoint beside the scheduler. ``/health`` and ``/metrics``
carry no prompts and no secrets.
The token is never forwarded to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from blockctl.engine.profile import load_profile
from blockctl.engine.steptime import StepTimeModel
from blockctl.errors import BadRequest, EngineError
from blockctl.openai_api import (
    bad_request_response,
    bearer_matches,
    error_response,
    http_error_handlers,
    loads_json,
    read_body,
)
from blockctl.promexpo import CONTENT_TYPE
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.metrics import render_metrics
from blockctl_agents.predictor.observe import parse_metrics
from blockctl_agents.predictor.proxy import forward_completion, forward_models
from blockctl_agents.predictor.settings import AgentSettings

Handler = Callable[[Request], Awaitable[Response]]


def _guard(core: AgentCore, handler: Handler) -> Handler:
    token = core.settings.token
    if token is None:
        return handler
    expected = (token.encode(),)

    async def guarded(request: Request) -> Response:
        if not bearer_matches(request.headers.get("authorization", ""), expected):
            return error_response(
                401,
                "missing or wrong bearer token",
                type="authentication_error",
                code="invalid_token",
                headers={"www-authenticate": "Bearer"},
            )
        return await handler(request)

    return guarded


_MAX_TOKENS = 2**31 - 1


def _int_field(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_TOKENS:
        raise ValueError(f"{key}: must be an integer in [1, {_MAX_TOKENS}], got {value!r}")
    return value


async def _scrape_loop(core: AgentCore, client: httpx.AsyncClient) -> None:
    """Refresh ``core.obs`` from the engine's /metrics every ``scrape_interval_s``; failures are counted."""
    while True:
        try:
            resp = await client.get("/metrics", timeout=2.0)
            resp.raise_for_status()
            now = time.monotonic()
            core.obs = parse_metrics(resp.text, now)
            core.last_scrape_ok = now
        except httpx.HTTPError:
            core.scrape_failures += 1
        await asyncio.sleep(core.settings.scrape_interval_s)


def create_app(settings: AgentSettings, model: StepTimeModel | None = None) -> Starlette:
    """The agent as an ASGI app; ``model`` defaults to the step-time model of ``settings.profile``."""
    core = AgentCore(settings, model if model is not None else load_profile(settings.profile).model)
    holder: dict[str, httpx.AsyncClient] = {}

    def client() -> httpx.AsyncClient:
        return holder["client"]

    async def predict(request: Request) -> Response:
        try:
            data = loads_json(await read_body(request, settings.max_body_bytes))
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            prompt, predicted = _int_field(data, "prompt_tokens"), _int_field(data, "predicted_output_tokens")
            now = time.monotonic()
            prediction, view = core.predict(prompt, predicted, now)
        except BadRequest as exc:
            return bad_request_response(exc)
        except (ValueError, EngineError) as exc:
            return error_response(400, str(exc))
        return JSONResponse(
            {
                **core.load(view, now),
                "ttft_s": prediction.ttft_s,
                "e2e_s": prediction.e2e_s,
                "queue_s": prediction.queue_s,
            }
        )

    async def load(request: Request) -> Response:
        now = time.monotonic()
        return JSONResponse(core.load(core.view(now), now))

    async def state(request: Request) -> Response:
        return JSONResponse(core.state(time.monotonic()))

    async def health(request: Request) -> Response:
        try:
            resp = await client().get("/health", timeout=2.0)
            engine_ok, detail = resp.status_code == 200, f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            engine_ok, detail = False, type(exc).__name__
        body = {
            "status": "ok" if engine_ok else "engine_unhealthy",
            "instance": settings.name,
            "engine": {"url": settings.engine_url, "healthy": engine_ok, "detail": detail},
        }
        return JSONResponse(body, status_code=200 if engine_ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(core, time.monotonic()), media_type=CONTENT_TYPE)

    async def completions(request: Request) -> Response:
        return await forward_completion(request, core, client())

    async def models(request: Request) -> Response:
        return await forward_models(core, client())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(connect=5.0, read=None, write=30.0, pool=None)
        # idle connections expire before the engine's own keep-alive timeout (uvicorn/vLLM: 5 s), so the
        # agent never sends on a connection the engine is closing (a request lost with nothing to retry)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=2.0)
        key = settings.engine_api_key  # the agent's own token is never forwarded; the engine's key is set here
        auth = {"authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=settings.engine_url, timeout=timeout, limits=limits,
                                     headers=auth) as c:
            holder["client"] = c
            task = asyncio.create_task(_scrape_loop(core, c))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def g(handler: Handler) -> Handler:
        return _guard(core, handler)

    routes = [
        Route("/v1/completions", g(completions), methods=["POST"]),
        Route("/v1/chat/completions", g(completions), methods=["POST"]),
        Route("/v1/models", g(models), methods=["GET"]),
        Route("/predict", g(predict), methods=["POST"]),
        Route("/load", g(load), methods=["GET"]),
        Route("/state", g(state), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=http_error_handlers())
    app.state.core = core
    return app
