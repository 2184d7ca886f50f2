"""A client that goes away mid-request has its request aborted in the engine and its KV blocks freed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from blockctl.engine.core import Engine
from blockctl.engine.types import StepShape
from blockctl_agents.emulator.app import create_app
from blockctl_agents.emulator.state import Emulator
from tests.conftest import serve_app

LONG = {"prompt": [9] * 200, "max_tokens": 3000, "ignore_eos": True}


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


def _idle(emu: Emulator) -> bool:
    e = emu.runner.engine
    return not e.running and not e.waiting and e.free_blocks == e.num_blocks_total and emu.runner.in_flight == 0


async def test_stream_disconnect_frees_blocks() -> None:
    app = create_app(max_num_seqs=4)
    emu: Emulator = app.state.emulator
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as resp:
            lines = resp.aiter_lines()
            got = [line async for line in _take(lines, 6)]
            assert all(line.startswith("data: ") for line in got if line)
            assert emu.runner.engine.free_blocks < emu.runner.engine.num_blocks_total
        await _until(lambda: _idle(emu))
    assert emu.runner.metrics.success["abort"] == 1 and emu.runner.metrics.success["length"] == 0


async def _take(lines: AsyncIterator[str], n: int) -> AsyncIterator[str]:
    count = 0
    async for line in lines:
        yield line
        count += bool(line)
        if count >= n:
            return


async def test_waiting_request_disconnect_leaves_the_queue() -> None:
    app = create_app(max_num_seqs=1)
    emu: Emulator = app.state.emulator
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as first:
            first_lines = first.aiter_lines()
            await anext(first_lines)
            async with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}):
                await _until(lambda: len(emu.runner.engine.waiting) == 1)
            await _until(lambda: not emu.runner.engine.waiting)
            assert len(emu.runner.engine.running) == 1  # the first one is untouched
        await _until(lambda: _idle(emu))


async def test_non_streaming_client_timeout_aborts() -> None:
    app = create_app(max_num_seqs=4)
    emu: Emulator = app.state.emulator
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/completions", json=LONG)
        await _until(lambda: _idle(emu))
    assert emu.runner.metrics.success["abort"] == 1


class _BrokenEngine(Engine):
    def step_duration(self, shape: StepShape) -> float:
        raise RuntimeError("boom")


async def test_engine_loop_failure_turns_the_instance_unhealthy(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(max_num_seqs=4)
    emu: Emulator = app.state.emulator
    emu.runner.engine = _BrokenEngine(emu.config, emu.runner.engine.model)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.post("/v1/completions", json={"prompt": "x", "max_tokens": 3})
        assert resp.status_code == 500 and "boom" in resp.json()["error"]["message"]
        assert (await http.get("/health")).status_code == 503
    assert "engine loop failed" in caplog.text
