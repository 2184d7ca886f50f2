"""The scheduler under faults, over real HTTP on loopback: at most once, deadlines, rotation, drain."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from blockctl.cluster.state import ensure_token
from blockctl.scheduler.app import Scheduler, SchedulerSettings
from blockctl.scheduler.proxy import Deadlines
from tests.conftest import serve_app
from tests.scheduler.fakes import FakeAgent, write_cluster

BODY = {"model": "emulated", "prompt": "Say hello", "max_tokens": 64}


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, *agents: FakeAgent, policy: str = "block", extra: dict[str, str] | None = None,
                  **settings: object) -> AsyncIterator[tuple[str, Scheduler]]:
    token = ensure_token(tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        urls = dict(extra or {})
        for agent in agents:
            agent.token = token
            urls[agent.name] = await stack.enter_async_context(serve_app(agent.app()))
        write_cluster(tmp_path, urls)
        # A generous /predict deadline: on a loaded machine a missed one would change which instance is chosen.
        settings.setdefault("predict_timeout_s", 2.0)
        sched = Scheduler(SchedulerSettings(state_dir=tmp_path, policy=policy, seed=0, poll_s=0.02,
                                            **settings))  # type: ignore[arg-type]
        yield await stack.enter_async_context(serve_app(sched.app)), sched


class ResettingAgent:
    """Reads one HTTP request, counts it, then resets the connection (RST): it reached the agent."""

    def __init__(self) -> None:
        self.posts = 0
        self.server: asyncio.Server | None = None

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import socket
        import struct

        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"POST /v1/"):
                self.posts += 1
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                       struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_reset_after_the_request_was_sent_is_an_error_never_a_replay(tmp_path: Path) -> None:
    ok = FakeAgent("ok")
    flaky = ResettingAgent()
    async with flaky as flaky_url, cluster(tmp_path, ok, policy="round-robin", extra={"flaky": flaky_url}) \
            as (url, _), httpx.AsyncClient(base_url=url) as http:
        replies = [await http.post("/v1/completions", json=BODY) for _ in range(2)]
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 502]  # the request that reached "flaky" failed for its client...
    assert flaky.posts == 1 and len(ok.forwarded) == 1  # ...and was sent nowhere else, nor sent twice
    failed = next(r for r in replies if r.status_code == 502)
    assert "ConnectionResetError" in failed.json()["error"]["message"]


async def test_a_502_from_an_agent_is_not_retried_elsewhere(tmp_path: Path) -> None:
    bad, good = FakeAgent("bad", e2e_s=0.1, traffic_status=502), FakeAgent("good", e2e_s=1.0)
    async with cluster(tmp_path, bad, good) as (url, _), httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json=BODY)
    assert r.status_code == 502 and len(bad.forwarded) == 1 and not good.forwarded


async def test_a_request_the_agent_did_not_run_is_rerouted_once_only(tmp_path: Path) -> None:
    a, b = FakeAgent("a", e2e_s=0.1, traffic_status=503), FakeAgent("b", e2e_s=0.2, traffic_status=503)
    c = FakeAgent("c", e2e_s=5.0)
    async with cluster(tmp_path, a, b, c) as (url, _), httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json=BODY)
        health = (await http.get("/health")).json()
    assert r.status_code == 503 and len(a.forwarded) == len(b.forwarded) == 1 and not c.forwarded
    assert set(health["out_of_rotation"]) == {"a", "b"}


async def test_a_client_that_leaves_aborts_its_non_streamed_request_at_the_agent(tmp_path: Path) -> None:
    slow = FakeAgent("slow", hang_s=5.0)
    async with cluster(tmp_path, slow) as (url, sched), httpx.AsyncClient(base_url=url) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/completions", json=BODY, timeout=0.5)
        for _ in range(100):
            if slow.disconnects:
                break
            await asyncio.sleep(0.02)
        assert slow.disconnects == 1 and not sched.flights


async def test_a_hung_instance_hits_the_first_byte_deadline_and_leaves_rotation(tmp_path: Path) -> None:
    hung, other = FakeAgent("hung", e2e_s=0.1, hang_s=5.0), FakeAgent("other", e2e_s=1.0)
    deadlines = Deadlines(first_byte_floor_s=0.3, first_byte_factor=1.0)
    async with cluster(tmp_path, hung, other, deadlines=deadlines) as (url, _), \
            httpx.AsyncClient(base_url=url) as http:
        started = time.perf_counter()
        first = await http.post("/v1/completions", json=BODY)
        elapsed = time.perf_counter() - started
        health = (await http.get("/health")).json()
        second = await http.post("/v1/completions", json=BODY)
    assert first.status_code == 504 and "no first byte within 0.3 s" in first.json()["error"]["message"]
    assert elapsed < 2.0 and len(other.forwarded) == 1  # not replayed on "other" (it may have run)
    assert "hung" in health["out_of_rotation"] and second.headers["x-blockctl-instance"] == "other"


async def test_a_stalled_stream_ends_with_an_error_event_at_the_idle_deadline(tmp_path: Path) -> None:
    agent = FakeAgent("a", stall_after=2, hang_s=5.0)
    async with cluster(tmp_path, agent, deadlines=Deadlines(idle_s=0.3)) as (url, _):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        got = []
        started = time.perf_counter()
        with pytest.raises(openai.APIError, match=r"no data for 0\.3 s"):
            stream = await client.completions.create(model="emulated", prompt="hi", stream=True)
            async for chunk in stream:
                got.append(chunk.choices[0].text)
        await client.close()
    assert got == ["hello", " from"] and time.perf_counter() - started < 2.0


async def test_an_unavailable_instance_leaves_rotation_at_once_and_is_probed_back(tmp_path: Path) -> None:
    sick, ok = FakeAgent("sick", e2e_s=0.1, predict_status=503), FakeAgent("ok", e2e_s=1.0)
    async with cluster(tmp_path, sick, ok) as (url, _), httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/completions", json=BODY)
        out = (await http.get("/health")).json()["out_of_rotation"]
        forwarded_while_sick = len(sick.forwarded)
        sick.predict_status = 200  # healed: the next probe (backoff from 0.25 s) brings it back
        await asyncio.sleep(0.6)
        back = (await http.get("/health")).json()["out_of_rotation"]
        again = await http.post("/v1/completions", json=BODY)
    assert r.headers["x-blockctl-instance"] == "ok" and forwarded_while_sick == 0
    assert out["sick"]["reason"].endswith("unavailable: engine unhealthy: scripted")
    assert back == {} and again.headers["x-blockctl-instance"] == "sick"


async def test_sigterm_drain_refuses_new_requests_and_cuts_streams_at_the_deadline(tmp_path: Path) -> None:
    agent = FakeAgent("a", words=("w",) * 40, word_delay_s=0.05)
    async with cluster(tmp_path, agent, drain_s=0.3) as (url, sched), httpx.AsyncClient(base_url=url) as http, \
            http.stream("POST", "/v1/completions", json={**BODY, "stream": True}) as resp:
        sched.begin_drain()
        refused = await http.post("/v1/completions", json=BODY)
        text = (await resp.aread()).decode()
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    events = [e for e in text.split("\n\n") if e.startswith("data:")]
    assert 1 <= len(events) < 40 and "the scheduler is shutting down" in events[-1]
