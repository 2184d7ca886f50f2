"""Shared test fixtures: free loopback ports and ASGI apps served by a real uvicorn on loopback.

Use ``serve_app`` (async, same event loop as the test) or ``serve_app_in_thread`` (its own loop in a
thread, for sync clients such as ``openai.OpenAI``). Both bind the socket first, so the URL is ready and
there is no port race, and both stop the server cleanly (lifespan shutdown runs) when the block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from blockctl.loopback import serve_loopback

__all__ = ["CLI_WIDTH", "bind_loopback", "free_port", "serve_app", "serve_app_in_thread"]

# The width every CLI console renders at in tests, whatever the terminal (or COLUMNS) says: rich wraps at the
# console's width, and a wrap that falls inside an asserted phrase must never decide a test. Subprocess tests pass
# COLUMNS=str(CLI_WIDTH) in their environment for the same reason.
CLI_WIDTH = 240


@pytest.fixture(autouse=True)
def _wide_cli_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    from blockctl.cli import ui

    for console in (ui.console, ui.err_console):
        monkeypatch.setattr(console, "_width", CLI_WIDTH)


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening-ready TCP socket on 127.0.0.1 (port 0: the OS picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()  # a port in use must not leak the socket (a ResourceWarning, an error under pytest)
        raise
    return sock


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out as a connection's source port (Linux: 32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base_port(offsets: tuple[int, ...] = (0, 1, 90, 100, 101, 102, 200, 201, 202)) -> int:
    """A base port for a local cluster (schedulers from +0, emulators from +100, agents from +200, the fault
    drill's reset relay at +90) whose ports are free now and stay clear of the kernel's ephemeral range: a port
    in that range can be taken as the source port of any outgoing connection between this check and the
    daemon's bind (seen: an emulator's "address already in use")."""
    from blockctl.cluster import procs

    top = _ephemeral_low() - max(offsets) - 1
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, max(20001, top), 10)
        if all(procs.port_free(base + off) for off in offsets):
            return base
    raise RuntimeError("no free port range below the ephemeral ports")


def free_port() -> int:
    """A port that was free a moment ago (prefer ``serve_app``, which keeps the socket it binds)."""
    with contextlib.closing(bind_loopback()) as sock:
        return int(sock.getsockname()[1])


def _server(app: Any, **config: Any) -> uvicorn.Server:
    settings: dict[str, Any] = {
        "log_level": "warning",
        "lifespan": "on",
        "ws": "none",
        "timeout_graceful_shutdown": 5,
    }
    settings.update(config)
    return uvicorn.Server(uvicorn.Config(app, **settings))


serve_app = serve_loopback  # serve ``app`` on a free loopback port in the running loop; yields its URL


@contextlib.contextmanager
def serve_app_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """Like ``serve_app`` but on its own event loop in a daemon thread (for blocking clients)."""
    sock = bind_loopback()
    server = _server(app, **config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        while not server.started:
            if errors or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start: {errors!r}")
            threading.Event().wait(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        if errors:
            raise errors[0]


@pytest.fixture
def unused_port() -> int:
    return free_port()
