"""The agent's HTTP server: OpenAI proxy routes, /predict, /load, /state, /health, /metrics; its lifecycle.

Routes (the contract the scheduler codes against):

* ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``: relayed to the engine.
  Request headers the agent reads: ``x-blockctl-prompt-tokens`` (else it counts with blockctl.tokens),
  ``x-blockctl-predicted-output-tokens`` (else the fallback in tracker.py), ``x-blockctl-predicted-ttft-ms``
  and ``x-blockctl-predicted-e2e-ms`` (the dispatch prediction to score; else it predicts itself), and
  ``x-request-id``. Responses carry ``x-blockctl-instance``. Engine unreachable, sick or agent draining: 503
  (``engine_unavailable``) with ``x-blockctl-unstarted`` (the engine did not run it: safe to re-route);
  engine failed mid-request: 502 (``engine_error``); both in OpenAI's error JSON.
* ``POST /predict {"prompt_tokens", "predicted_output_tokens"[, "block_hashes"]}`` → ``ttft_s``, ``e2e_s``,
  ``queue_s`` (seconds from now, calibrated, see accuracy.Calibration; with the prompt's block hashes its
  prefill starts after what the shadow prefix cache holds) plus the ``/load`` fields; 400 for a bad body or a
  prompt that cannot fit the engine; 503 (``engine_unhealthy``, with the reason) while the engine is sick
  (a scrape failed or stalled, a forward was refused) or the agent drains; ``/load`` likewise.
* ``GET /load`` → ``instance``, ``running``, ``waiting``, ``outstanding``, ``kv_free_blocks``,
  ``kv_total_blocks``, ``waiting_prompt_blocks``, ``recent_requests`` (no what-if; cheap). ``POST /load
  {"prompt_tokens", "block_hashes"}`` adds ``prefix_hit_tokens`` (the shadow cache's match) and ``block_size``.
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
import logging
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
from blockctl.errors import BadRequest, EngineError, UpstreamError
from blockctl.fastroutes import FastStarlette
from blockctl.openai_api import (
    bad_request_response,
    bearer_matches,
    error_response,
    http_error_handlers,
    loads_json,
    read_body,
)
from blockctl.promexpo import CONTENT_TYPE
from blockctl.scheduler.http1 import Http1Pool
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.health import EngineHealth
from blockctl_agents.predictor.metrics import render_metrics
from blockctl_agents.predictor.observe import parse_metrics
from blockctl_agents.predictor.proxy import Upstream, forward_completion, forward_models
from blockctl_agents.predictor.settings import AgentSettings

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("blockctl.agent")


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
_HOT = ("/v1/completions", "/v1/chat/completions", "/predict", "/load")  # served past the middleware stack


def _int_field(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_TOKENS:
        raise ValueError(f"{key}: must be an integer in [1, {_MAX_TOKENS}], got {value!r}")
    return value


def _hashes_field(data: dict[str, Any]) -> list[int]:
    """The optional ``block_hashes``: the prompt's chained block hashes (blockctl.engine.prefixcache)."""
    value = data.get("block_hashes", [])
    if not isinstance(value, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in value):
        raise ValueError(f"block_hashes: must be a list of integers, got {type(value).__name__}")
    return value


async def _scrape(up: Upstream, stall: float) -> str:
    """The engine's /metrics text; raises ``_ScrapeFailed`` with the reason (refused: ``refused`` set)."""
    try:
        async with asyncio.timeout(stall):
            status, _, body = await up.pool.request("GET", "/metrics")
    except TimeoutError:
        raise _ScrapeFailed(f"no /metrics answer within {stall:.1f} s") from None
    except UpstreamError as exc:
        refused = not exc.sent and "ConnectionRefused" in exc.message
        why = "refuses connections" if refused else "cannot connect" if not exc.sent else "connection broke"
        raise _ScrapeFailed(why if refused else f"/metrics failed ({why})", refused=refused) from None
    if status != 200:
        raise _ScrapeFailed(f"/metrics answered HTTP {status}")
    return body.decode("utf-8", "replace")


class _ScrapeFailed(Exception):
    def __init__(self, reason: str, *, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.refused = reason, refused


async def _scrape_loop(core: AgentCore, up: Upstream) -> None:
    """Refresh ``core.obs`` from the engine's /metrics every ``scrape_interval_s`` (through the lean HTTP/1.1
    pool: this runs 4 times a second beside the hot path). A failed or stalled scrape marks the engine sick;
    requests in flight are then aborted unless the engine is visibly still producing tokens (a slow scrape on
    a busy machine must not cut healthy streams)."""
    stall = core.settings.stall_s
    while True:
        try:
            text = await _scrape(up, stall)
            now = time.monotonic()
            core.obs = parse_metrics(text, now)
            core.last_scrape_ok = now
            since = up.health.answered()
            if since is not None:
                log.warning("engine healthy again after %.1f s", now - since)
        except _ScrapeFailed as exc:
            core.scrape_failures += 1
            now = time.monotonic()
            if up.health.failed(exc.reason, now):
                log.warning("engine unhealthy: %s", exc.reason)
            # Requests in flight are cut only on evidence that the engine is stuck or gone: refused, or sick
            # for a whole stall period with no token streamed meanwhile (one slow scrape on a busy machine
            # takes the instance out of rotation, but must not cut healthy requests).
            last = core.tracker.last_token_at
            stuck = exc.refused or now - up.health.since >= stall
            if up.flights and stuck and (last is None or now - last > stall):
                n = up.abort_all(f"engine unhealthy: {exc.reason}")
                log.warning("abort: %d request(s) in flight on the unhealthy engine", n)
        await asyncio.sleep(core.settings.scrape_interval_s)


def _unavailable(reason: str) -> Response:
    return error_response(503, reason, type="service_unavailable", code="engine_unhealthy")


def create_app(settings: AgentSettings, model: StepTimeModel | None = None) -> Starlette:
    """The agent as an ASGI app; ``model`` defaults to the step-time model of ``settings.profile``."""
    core = AgentCore(settings, model if model is not None else load_profile(settings.profile).model)
    holder: dict[str, httpx.AsyncClient] = {}
    # idle connections expire before the engine's own keep-alive timeout (uvicorn/vLLM: 5 s), so the agent
    # never writes to a connection the engine is closing (a request lost with nothing provably unsent)
    up = Upstream(Http1Pool(settings.engine_url, connect_timeout_s=2.0, idle_expiry_s=2.0), EngineHealth(),
                  body_timeout_s=settings.body_timeout_s)

    def client() -> httpx.AsyncClient:
        return holder["client"]

    def begin_drain() -> None:
        """SIGTERM: /predict and new requests answer 503 (schedulers route elsewhere); what is in flight may
        run ``drain_s`` more, then it is cut (streams end with an SSE error event)."""
        if up.health.draining:
            return
        up.health.draining = True
        log.warning("draining: %d request(s) in flight get %.1f s to finish", len(up.flights), settings.drain_s)

        def expired() -> None:
            if up.abort_all("the agent is shutting down"):
                log.warning("abort: drain deadline reached with requests in flight")

        asyncio.get_running_loop().call_later(settings.drain_s, expired)

    async def predict(request: Request) -> Response:
        try:
            data = loads_json(await read_body(request, settings.max_body_bytes))
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            prompt, predicted = _int_field(data, "prompt_tokens"), _int_field(data, "predicted_output_tokens")
            now = time.monotonic()
            hashes = _hashes_field(data)
            prediction, view = core.predict(prompt, predicted, now, hashes)
        except BadRequest as exc:
            return bad_request_response(exc)
        except (ValueError, EngineError) as exc:
            return error_response(400, str(exc))
        refused = up.health.unavailable()
        if refused is not None:
            return _unavailable(refused)
        answer = core.load(view, now)
        answer.update(ttft_s=prediction.ttft_s, e2e_s=prediction.e2e_s, queue_s=prediction.queue_s,
                      prefill_s=prediction.prefill_s)
        if hashes:  # the match the what-if used, for the policy's price of a miss elsewhere
            answer.update(prefix_hit_tokens=prediction.prefix_hit, block_size=settings.engine_config.block_size)
        return JSONResponse(answer)

    async def load(request: Request) -> Response:
        """GET: the instance's load. POST ``{"prompt_tokens", "block_hashes"}``: also how much of that prompt
        the instance's prefix cache holds (``prefix_hit_tokens``), for prefix-aware load policies."""
        refused = up.health.unavailable()
        if refused is not None:
            return _unavailable(refused)
        now = time.monotonic()
        answer = core.load(core.view(now), now)
        if request.method == "POST":
            try:
                data = loads_json(await read_body(request, settings.max_body_bytes))
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object")
                prompt, hashes = _int_field(data, "prompt_tokens"), _hashes_field(data)
            except BadRequest as exc:
                return bad_request_response(exc)
            except ValueError as exc:
                return error_response(400, str(exc))
            answer["prefix_hit_tokens"] = core.shadow.match(prompt, hashes)[0] if hashes else 0
            answer["block_size"] = core.settings.engine_config.block_size
        return JSONResponse(answer)

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
        return await forward_completion(request, core, up)

    async def models(request: Request) -> Response:
        return await forward_models(core, client())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(connect=2.0, read=None, write=30.0, pool=None)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=8, keepalive_expiry=2.0)
        key = settings.engine_api_key  # the agent's own token is never forwarded; the engine's key is set here
        auth = {"authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=settings.engine_url, timeout=timeout, limits=limits,
                                     headers=auth) as c:
            holder["client"] = c
            task = asyncio.create_task(_scrape_loop(core, up))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await up.pool.aclose()

    def g(handler: Handler) -> Handler:
        return _guard(core, handler)

    routes = [
        Route("/v1/completions", g(completions), methods=["POST"]),
        Route("/v1/chat/completions", g(completions), methods=["POST"]),
        Route("/v1/models", g(models), methods=["GET"]),
        Route("/predict", g(predict), methods=["POST"]),
        Route("/load", g(load), methods=["GET", "POST"]),
        Route("/state", g(state), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    # the routing path's routes skip Starlette's middleware stack (blockctl.fastroutes)
    hot = {(m, r.path): r.endpoint for r in routes if r.path in _HOT for m in (r.methods or ()) if m != "HEAD"}
    app = FastStarlette(routes=routes, fast=hot, lifespan=lifespan, exception_handlers=http_error_handlers())
    app.state.core = core
    app.state.upstream = up
    app.state.begin_drain = begin_drain
    return app
