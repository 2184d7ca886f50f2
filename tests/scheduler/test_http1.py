"""The scheduler's HTTP/1.1 client against real servers on loopback: framing, keep-alive, failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from blockctl.errors import UpstreamError
from blockctl.scheduler.http1 import Http1Pool
from tests.conftest import free_port, serve_app


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"len": len(body), "auth": request.headers.get("authorization"),
                         "x": request.headers.get("x-test"), "path": request.url.path})


async def _chunks(request: Request) -> Response:
    async def gen() -> AsyncIterator[bytes]:
        for n in range(5):
            yield f"data: {n}\n\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(gen(), media_type="text/event-stream")


async def _slow(request: Request) -> Response:
    await asyncio.sleep(0.5)
    return Response(b"late")


APP = Starlette(routes=[Route("/echo", _echo, methods=["POST", "GET"]), Route("/sse", _chunks),
                        Route("/slow", _slow)])


async def test_content_length_and_headers_and_reuse() -> None:
    async with serve_app(APP) as url:
        pool = Http1Pool(url, {"Authorization": "Bearer t"})
        for size in (0, 10, 200_000):  # 200 kB: more than one socket read, and a drain on the way out
            status, headers, body = await pool.request("POST", "/echo", b"x" * size, {"x-test": "1"})
            assert status == 200 and headers["content-type"] == "application/json"
            assert body == (b'{"len":%d,"auth":"Bearer t","x":"1","path":"/echo"}' % size)
        assert len(pool._idle) == 1  # one connection, reused for every request
        await pool.aclose()


async def test_chunked_stream_is_decoded_and_the_connection_reused() -> None:
    async with serve_app(APP) as url:
        pool = Http1Pool(url)
        stream = await pool.stream("GET", "/sse")
        assert stream.status == 200 and "chunked" in stream.head.headers["transfer-encoding"]
        got = [c async for c in stream.chunks()]
        assert b"".join(got) == b"".join(f"data: {n}\n\n".encode() for n in range(5))
        assert len(pool._idle) == 1
        assert (await pool.request("GET", "/echo"))[0] == 200
        await pool.aclose()


async def test_abandoned_stream_closes_its_connection() -> None:
    async with serve_app(APP) as url:
        pool = Http1Pool(url)
        stream = await pool.stream("GET", "/sse")
        chunks = stream.chunks()
        assert await anext(chunks) == b"data: 0\n\n"
        await stream.aclose()
        await chunks.aclose()
        assert not pool._idle
        await pool.aclose()


async def test_connection_refused_is_upstream_error() -> None:
    pool = Http1Pool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.request("GET", "/")


async def test_server_restart_between_requests_is_survived() -> None:
    """An idle connection closed by the server (uvicorn restarts, keep-alive expiry) is replaced."""
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve_app(APP))
        pool = Http1Pool(url)
        assert (await pool.request("GET", "/echo"))[0] == 200
    # The server is gone; its pooled connection is dead.
    with pytest.raises(UpstreamError):
        await pool.request("GET", "/echo")
    assert not pool._idle


async def test_cancelled_request_does_not_poison_the_pool() -> None:
    async with serve_app(APP) as url:
        pool = Http1Pool(url)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.request("GET", "/slow"), 0.05)
        assert not pool._idle
        status, _, body = await pool.request("GET", "/slow")
        assert (status, body) == (200, b"late")
        await pool.aclose()


def test_only_plain_http_urls() -> None:
    with pytest.raises(UpstreamError, match="only http"):
        Http1Pool("https://example.com")
