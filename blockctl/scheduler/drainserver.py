"""A uvicorn server that drains on SIGTERM (used by the scheduler daemon and the predictor agent)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn


class DrainingServer(uvicorn.Server):
    """On SIGTERM: stop listening, call ``drain`` (the app then refuses new requests and cuts what is still in
    flight at its drain deadline), let requests in flight finish, and only then exit."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], None]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._drain()
        await super().shutdown(sockets)
