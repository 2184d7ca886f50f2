"""The three servers the bad-input corpus runs against, on loopback in this process: emulator ← agent ← scheduler.

The agent requires the cluster token and the scheduler an API key, so the corpus' auth cases run too; the
scheduler writes a request log, so a run can check that no answered request lost its log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from blockctl.bench.badinput import Target
from blockctl.cluster.state import ClusterState, InstanceState, ensure_token, save_state
from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.scheduler.app import Scheduler, SchedulerSettings
from blockctl.scheduler.reqlog import RequestLogSettings

API_KEY = "bad-input-corpus-key"


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    key: str | None


@dataclass(frozen=True, slots=True)
class LocalServers:
    endpoints: dict[Target, Endpoint]
    scheduler: Scheduler
    request_log: Path


@contextlib.asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on", ws="none",
                                           timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)
        sock.close()


@contextlib.asynccontextmanager
async def local_servers(state_dir: Path, *, max_body_bytes: int) -> AsyncIterator[LocalServers]:
    """An emulator, its agent and a scheduler in front, each refusing bodies over ``max_body_bytes``."""
    from blockctl_agents.emulator.app import create_app as create_emulator
    from blockctl_agents.predictor.app import create_app as create_agent
    from blockctl_agents.predictor.settings import AgentSettings

    token = ensure_token(state_dir)
    profile = load_profile(DEFAULT_PROFILE)
    log = state_dir / "logs" / "requests.jsonl"
    async with _serve(create_emulator(max_num_seqs=8, seed=0, max_body_bytes=max_body_bytes)) as emu:
        agent_settings = AgentSettings(emu, "emu-0", profile.name, profile.engine_defaults(), token=token,
                                       max_body_bytes=max_body_bytes)
        async with _serve(create_agent(agent_settings, profile.model)) as agent:
            instance = InstanceState(name="emu-0", host="127.0.0.1", agent_url=agent, engine_url=emu,
                                     profile=profile.name)
            save_state(state_dir, ClusterState(kind="local", policy="block", instances=(instance,)))
            scheduler = Scheduler(SchedulerSettings(
                state_dir=state_dir, api_keys=frozenset({API_KEY}), seed=0, poll_s=0.05,
                max_body_bytes=max_body_bytes, request_log=RequestLogSettings(log)))
            async with _serve(scheduler.app) as url:
                for _ in range(200):  # membership reads cluster.json at start-up
                    if scheduler.membership.serving:
                        break
                    await asyncio.sleep(0.01)
                yield LocalServers({"scheduler": Endpoint(url, API_KEY), "agent": Endpoint(agent, token),
                                    "emulator": Endpoint(emu, None)}, scheduler, log)
