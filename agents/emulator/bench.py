"""Measure the emulator's own CPU cost per engine step at a fixed number of running streams.

The emulator runs as its own process (as in a cluster); the bench process holds ``running`` streaming
requests open against it and samples the process's CPU time and the emulator's step counters (from its
/metrics) before and after a measurement window. Being single-threaded, the emulator's CPU time is the
Python time it spends per step on scheduling, token fan-out and HTTP streaming together.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import IO, Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from blockctl.errors import UpstreamError

_COUNTERS = {
    "steps": "blockctl_emulator_steps_total",
    "emulated_s": "blockctl_emulator_step_seconds_total",
    "late_s": "blockctl_emulator_late_seconds_total",
    "engine_s": "blockctl_emulator_engine_cpu_seconds_total",
    "tokens": "vllm:generation_tokens_total",
    "running": "vllm:num_requests_running",
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: process CPU seconds, wall seconds and the emulator's counters."""

    cpu_s: float
    wall_s: float
    steps: float
    emulated_s: float
    late_s: float
    engine_s: float
    tokens: float
    running: float


@dataclass(frozen=True, slots=True)
class Overhead:
    running: int  # streams running during the window (the fewest seen at either end)
    steps: int
    tokens_per_step: float
    emulated_ms_per_step: float  # the profile's step time (noise included)
    cpu_ms_per_step: float  # emulator process CPU per step, everything included
    engine_ms_per_step: float  # of which: engine loop (schedule, complete, wake streams)
    http_ms_per_step: float  # of which: the rest (SSE chunk building and writes, event loop, uvicorn)
    cpu_over_emulated: float  # the headline: the share of an emulated step the emulator needs as CPU
    wall_over_emulated: float  # >1 when the emulator could not keep real time
    late_ms_per_step: float


def summarize(before: Sample, after: Sample) -> Overhead:
    """The overhead between two samples (pure)."""
    steps = after.steps - before.steps
    if steps <= 0:
        raise UpstreamError("the emulator ran no steps during the measurement window")
    emulated = after.emulated_s - before.emulated_s
    cpu = after.cpu_s - before.cpu_s
    engine = after.engine_s - before.engine_s
    return Overhead(
        running=int(min(before.running, after.running)),
        steps=int(steps),
        tokens_per_step=(after.tokens - before.tokens) / steps,
        emulated_ms_per_step=1e3 * emulated / steps,
        cpu_ms_per_step=1e3 * cpu / steps,
        engine_ms_per_step=1e3 * engine / steps,
        http_ms_per_step=1e3 * (cpu - engine) / steps,
        cpu_over_emulated=cpu / emulated,
        wall_over_emulated=(after.wall_s - before.wall_s) / emulated,
        late_ms_per_step=1e3 * (after.late_s - before.late_s) / steps,
    )


def _parse_counters(text: str) -> dict[str, float]:
    wanted = {v: k for k, v in _COUNTERS.items()}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out[wanted[sample.name]] = sample.value
    missing = set(_COUNTERS) - set(out)
    if missing:
        raise UpstreamError(f"/metrics lacks {sorted(missing)}")
    return out


async def _sample(http: httpx.AsyncClient, proc: psutil.Process) -> Sample:
    text = (await http.get("/metrics")).text
    times = proc.cpu_times()
    return Sample(cpu_s=times.user + times.system, wall_s=time.monotonic(), **_parse_counters(text))


async def _hold_stream(http: httpx.AsyncClient, prompt_tokens: int, max_tokens: int) -> None:
    body = {"prompt": [11] * prompt_tokens, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    async with http.stream("POST", "/v1/completions", json=body) as resp:
        async for _ in resp.aiter_raw():
            pass


async def measure(url: str, pid: int, *, running: int, duration: float, prompt_tokens: int = 200,
                  max_tokens: int = 3500, warmup_timeout: float = 60.0) -> Overhead:
    """Open ``running`` streams, wait until all run, then measure over ``duration`` seconds."""
    proc = psutil.Process(pid)
    limits = httpx.Limits(max_connections=running + 4)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as http:
        streams = [asyncio.create_task(_hold_stream(http, prompt_tokens, max_tokens)) for _ in range(running)]
        try:
            end = time.monotonic() + warmup_timeout
            while (await _sample(http, proc)).running < running:
                if time.monotonic() > end or any(s.done() for s in streams):
                    raise UpstreamError(f"{url}: {running} streams never all ran at once")
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # past the admission prefills: the steady decode state
            before = await _sample(http, proc)
            await asyncio.sleep(duration)
            after = await _sample(http, proc)
        finally:
            for s in streams:
                s.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
    return summarize(before, after)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def emulator_process(port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``python -m blockctl_agents.emulator`` on loopback; wait for /health; stop it on exit."""
    cmd = [sys.executable, "-m", "blockctl_agents.emulator", "--port", str(port), *extra]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _wait_healthy(port, proc, log)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: IO[bytes], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            err = log.read().decode(errors="replace")[-2000:]
            raise UpstreamError(f"emulator exited with {proc.returncode}: {err}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        if time.monotonic() > end:
            raise UpstreamError(f"emulator did not become healthy within {timeout:.0f} s")
        time.sleep(0.1)


def as_dict(result: Overhead) -> dict[str, Any]:
    return asdict(result)
