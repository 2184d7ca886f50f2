"""The emulator's ASGI app: vLLM's OpenAI-compatible routes, /health, /tokenize and /metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from blockctl import __version__
from blockctl.errors import BadRequest
from blockctl.openai_api import (
    bad_request_response,
    http_error_handlers,
    read_body,
)
from blockctl.promexpo import CONTENT_TYPE
from blockctl.tokenize_api import tokenize_response
from blockctl.tokens import get_counter
from blockctl_agents.emulator import metrics
from blockctl_agents.emulator.auth import RequireKey
from blockctl_agents.emulator.config import EmulatorSettings, resolve
from blockctl_agents.emulator.serving import completions
from blockctl_agents.emulator.state import Emulator

_CREATED = int(time.time())


def _emu(request: Request) -> Emulator:
    emu: Emulator = request.app.state.emulator
    return emu


async def health(request: Request) -> Response:
    """200 once the (emulated) engine has started; 503 before and while shutting down."""
    return Response(status_code=200 if _emu(request).ready() else 503)


async def models(request: Request) -> Response:
    emu = _emu(request)
    data = [
        {"id": name, "object": "model", "created": _CREATED, "owned_by": "vllm", "root": emu.model_name,
         "parent": None, "max_model_len": emu.config.max_model_len}
        for name in emu.settings.served_model_name
    ]
    return JSONResponse({"object": "list", "data": data})


async def tokenize(request: Request) -> Response:
    """vLLM's ``/tokenize``: ``{"prompt": str}`` or ``{"messages": [...]}`` -> count and token ids."""
    emu = _emu(request)
    try:
        raw = await read_body(request, emu.settings.max_body_bytes)
    except BadRequest as exc:
        return bad_request_response(exc)
    return tokenize_response(raw, emu.counter, emu.config.max_model_len)


async def prometheus(request: Request) -> Response:
    emu = _emu(request)
    text = metrics.render(emu.model_name, emu.runner.metrics, emu.runner.gauges())
    return Response(text, media_type=CONTENT_TYPE)


async def version(request: Request) -> Response:
    return JSONResponse({"version": f"blockctl-emulator {__version__}"})


def create_app(settings: EmulatorSettings | None = None, **overrides: Any) -> Starlette:
    """A ready-to-serve emulator; ``overrides`` are EmulatorSettings fields (e.g. ``max_num_seqs=8``).

    The engine loop starts with the app's lifespan; ``app.state.emulator`` gives tests and the CLI the
    Emulator (its runner, engine and metrics).
    """
    settings = dataclasses.replace(settings or EmulatorSettings(), **overrides)
    profile, config = resolve(settings)
    noise = profile.model.rel_noise if settings.noise is None else settings.noise
    emu = Emulator(settings, config, profile.model, noise, get_counter(settings.tokenizer))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        emu.start()
        try:
            yield
        finally:
            await emu.stop()

    middleware = [Middleware(RequireKey, key=settings.api_key)] if settings.api_key else []
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=http_error_handlers(),
                    middleware=middleware)
    app.state.emulator = emu
    return app
