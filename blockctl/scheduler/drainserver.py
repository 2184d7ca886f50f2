"""A uvicorn server that drains on SIGTERM (used by the scheduler daemon and the predictor agent)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import uvicorn

# uvicorn settings for a daemon on the routing path: the fastest loop and parser uvicorn offers, no access log
# (it would name paths per request for nothing; prompts never go near a log), and no per-response work nobody
# reads (Date and Server headers, X-Forwarded-* rewriting: these daemons are not behind a proxy they trust).
LEAN: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "access_log": False, "proxy_headers": False,
        "server_header": False, "date_header": False}


class DrainingServer(uvicorn.Server):
    """On SIGTERM: stop listening, call ``drain`` (the app then refuses new requests and cuts what is still in
    flight at its drain deadline), let requests in flight finish, and only then exit."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], None]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._drain()
        await super().shutdown(sockets)
