"""The shared serving fixtures start a real server, run lifespan start-up and shut-down, and free the port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.conftest import bind_loopback, serve_app, serve_app_in_thread


def _app(events: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("start")
        yield
        events.append("stop")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    return Starlette(routes=[Route("/", hello)], lifespan=lifespan)


async def test_serve_app_in_loop() -> None:
    events: list[str] = []
    async with serve_app(_app(events)) as url, httpx.AsyncClient() as client:
        assert (await client.get(url)).text == "hi"
        assert events == ["start"]
    assert events == ["start", "stop"]
    port = int(url.rsplit(":", 1)[1])
    bind_loopback(port).close()  # the port is free again


def test_serve_app_in_thread() -> None:
    events: list[str] = []
    with serve_app_in_thread(_app(events)) as url:
        assert httpx.get(url).text == "hi"
    assert events == ["start", "stop"]
