"""Starlette with hot routes dispatched first, past the middleware stack (the scheduler's and agent's proxy paths).

Why: on the routing path a request crosses two daemons (scheduler, agent) and three requests (``/predict`` on
each agent asked, the forward through one). Starlette's per-request machinery (error and exception middleware,
route matching, the request/response wrappers) cost ~50 µs a crossing on this project's 2-core machines, a
fifth of an agent's CPU per request. A hot route here is looked up by exact method and path in one dict and
its handler is awaited directly; everything else (other routes, 404/405, lifespan) goes through Starlette as
before. A hot handler's exception is answered by the app's ``Exception`` handler (OpenAI's 500 JSON) and then
raised for the server to log, as Starlette's ServerErrorMiddleware does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class FastStarlette(Starlette):
    """A Starlette app whose ``fast`` routes ({(method, path): handler}) skip the middleware stack."""

    def __init__(self, *, fast: Mapping[tuple[str, str], Handler], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast = dict(fast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.fast.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if handler is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            crash = self.exception_handlers.get(Exception) or self.exception_handlers.get(500)
            if crash is None:
                raise
            await (await crash(request, exc))(scope, receive, send)
            raise
        await response(scope, receive, send)
