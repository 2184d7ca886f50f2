"""Serve an ASGI app with uvicorn on a free loopback port inside the running event loop (benches, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def serve_loopback(app: Any, **config: Any) -> AsyncIterator[str]:
    """Yields ``http://127.0.0.1:PORT`` once ``app`` serves; stops it (lifespan shutdown runs) on exit.

    The socket is bound first, so there is no port race; ``config`` overrides uvicorn.Config settings.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    settings: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "ws": "none",
                                "timeout_graceful_shutdown": 5, **config}
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raises a start-up failure
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)
        sock.close()
