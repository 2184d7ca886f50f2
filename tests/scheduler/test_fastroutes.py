"""FastStarlette: hot routes skip the middleware stack but answer like the rest of the app."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from blockctl.fastroutes import FastStarlette
from blockctl.loopback import serve_loopback
from blockctl.openai_api import http_error_handlers


def _app() -> FastStarlette:
    calls: list[str] = []

    async def echo(request: Request) -> Response:
        calls.append(request.scope["path"])
        return JSONResponse({"got": (await request.body()).decode(), "app": request.app is app})

    async def boom(request: Request) -> Response:
        raise RuntimeError("broken handler")

    async def slow(request: Request) -> Response:
        return JSONResponse({"route": "slow"})

    routes = [Route("/echo", echo, methods=["POST"]), Route("/boom", boom, methods=["POST"]),
              Route("/slow", slow, methods=["GET"])]
    app = FastStarlette(routes=routes, fast={("POST", "/echo"): echo, ("POST", "/boom"): boom},
                        exception_handlers=http_error_handlers())
    app.state.calls = calls
    return app


async def test_hot_routes_answer_and_the_rest_goes_through_starlette() -> None:
    app = _app()
    async with serve_loopback(app) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/echo", content=b"hi")
        assert r.status_code == 200 and r.json() == {"got": "hi", "app": True}
        assert (await c.get("/slow")).json() == {"route": "slow"}  # not hot: the router serves it
        wrong = await c.get("/echo")  # a hot path with another method: Starlette's 405, as OpenAI JSON
        assert wrong.status_code == 405 and "error" in wrong.json()
        missing = await c.post("/nowhere")
        assert missing.status_code == 404 and "error" in missing.json()
    assert app.state.calls == ["/echo"]


async def test_a_hot_handler_that_raises_gets_the_apps_500() -> None:
    async with serve_loopback(_app()) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/boom")
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error"
        assert (await c.post("/echo", content=b"after")).json()["got"] == "after"  # the server still serves
