"""Real-time fidelity: a lone request's TTFT and inter-token gaps match the profile's step times."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import openai

from blockctl.engine.core import Engine
from blockctl.engine.types import Request
from blockctl_agents.emulator.app import create_app
from blockctl_agents.emulator.config import EmulatorSettings, resolve
from blockctl_agents.emulator.state import Emulator
from tests.conftest import serve_app

PROMPT = 1500  # one prefill chunk (budget 2048): TTFT is one long step
OUTPUT = 40


def _expected_steps(settings: EmulatorSettings) -> list[float]:
    """Step durations of the same request on a noise-free engine: [prefill, decode, decode, ...]."""
    profile, config = resolve(settings)
    engine = Engine(config, profile.model)
    engine.add(Request("r", PROMPT, OUTPUT))
    durations = []
    while (res := engine.step()) is not None:
        durations.append(res.duration)
    assert len(durations) == OUTPUT
    return durations


async def test_lone_request_follows_profile_step_times() -> None:
    settings = EmulatorSettings(max_num_seqs=8)
    steps = _expected_steps(settings)
    app = create_app(settings)
    emu: Emulator = app.state.emulator
    bound = 4 * emu.noise + 1e-6  # a step's duration stays within 4 sigma of the profile's
    async with serve_app(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        arrivals: list[float] = []
        sent = time.perf_counter()
        stream = await client.completions.create(
            model="emulated", prompt=[11] * PROMPT, max_tokens=OUTPUT, stream=True,
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if chunk.choices:
                arrivals.append(time.perf_counter() - sent)
        await client.close()
        m = emu.runner.metrics
        # in engine time (what /metrics reports): exact up to the injected noise
        assert m.steps == OUTPUT and m.ttft.n == 1 and m.itl.n == OUTPUT - 1
        assert abs(m.ttft.total - steps[0]) <= bound * steps[0]
        assert abs(m.itl.total - sum(steps[1:])) <= bound * sum(steps[1:])
        assert abs(m.e2e.total - sum(steps)) <= bound * sum(steps) + m.late_seconds
    # at the client: no token early (causality), and the typical gap is one decode step
    assert len(arrivals) == OUTPUT
    expected_at = [sum(steps[: i + 1]) for i in range(OUTPUT)]
    assert all(a >= e * (1 - bound) for a, e in zip(arrivals, expected_at, strict=True))
    assert arrivals[0] < steps[0] + 0.25  # HTTP + a loaded machine; tolerant by design
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert abs(statistics.median(gaps) - statistics.median(steps[1:])) < 0.35 * steps[1] + 0.002


async def test_injected_noise_has_the_requested_spread() -> None:
    settings = EmulatorSettings(max_num_seqs=8, noise=0.1, seed=3)
    steps = _expected_steps(settings)
    app = create_app(settings)
    emu: Emulator = app.state.emulator
    async with serve_app(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        await client.completions.create(model="emulated", prompt=[11] * PROMPT, max_tokens=OUTPUT,
                                        extra_body={"ignore_eos": True})
        await client.close()
    # the sum of OUTPUT noisy steps: mean ratio 1, spread 0.1 / sqrt(OUTPUT) (5 sigma allowed)
    ratio = emu.runner.metrics.step_seconds / sum(steps)
    assert abs(ratio - 1) < 5 * 0.1 / OUTPUT**0.5
    assert ratio != 1.0


async def test_chat_role_chunk_comes_with_the_first_token_not_at_admission() -> None:
    """vLLM opens a chat stream when the first token is ready: queueing and prefill come before any chunk."""
    app = create_app(EmulatorSettings(max_num_seqs=1))
    async with serve_app(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        busy = asyncio.create_task(client.completions.create(  # holds the only slot for ~OUTPUT steps
            model="emulated", prompt=[11] * PROMPT, max_tokens=OUTPUT, extra_body={"ignore_eos": True}))
        while app.state.emulator.runner.metrics.steps == 0:
            await asyncio.sleep(0.002)
        sent = time.perf_counter()
        stream = await client.chat.completions.create(
            model="emulated", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True,
            extra_body={"ignore_eos": True})
        role_at = content_at = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.role == "assistant" and role_at is None:
                role_at = time.perf_counter() - sent
            elif chunk.choices and chunk.choices[0].delta.content and content_at is None:
                content_at = time.perf_counter() - sent
        first = await busy
        await client.close()
    assert first.usage is not None and role_at is not None and content_at is not None
    queued = sum(_expected_steps(EmulatorSettings(max_num_seqs=1))[1:])  # the busy request's decode
    assert role_at > 0.5 * queued  # not at admission
    assert content_at - role_at < 0.02 + 0.1 * role_at  # together with the first token
