"""What `blockctl status` shows: every instance's health and load from its agent, every scheduler's health."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from blockctl.cluster.state import ClusterState, InstanceState, SchedulerState, read_token


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    name: str
    host: str
    status: str  # serving | draining (from cluster.json)
    agent_url: str
    healthy: bool  # the agent answers and says its engine is healthy
    detail: str  # "ok" or why not
    running: int | None = None
    waiting: int | None = None
    kv_used_pct: float | None = None
    completed: int | None = None  # requests the agent saw complete
    e2e_error_p50_pct: float | None = None  # median |predicted - actual| / actual E2E, recent requests
    ttft_error_p50_pct: float | None = None


@dataclass(frozen=True, slots=True)
class SchedulerStatus:
    url: str
    pid: int | None
    healthy: bool
    policy: str | None
    instances: int | None  # instances it routes to


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    kind: str
    policy: str
    state_dir: str
    instances: tuple[InstanceStatus, ...]
    schedulers: tuple[SchedulerStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _num(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, (int, float)) and not isinstance(data, bool) else None


def instance_from_agent(inst: InstanceState, health: Any, state: Any, problem: str | None) -> InstanceStatus:
    """Pure: shape an agent's /health and /state answers (None when unreachable) into one status row."""
    healthy = problem is None and isinstance(health, dict) and health.get("status") == "ok"
    detail = problem or (
        "ok"
        if healthy
        else str(health.get("status", "unhealthy") if isinstance(health, dict) else "unhealthy")
    )
    free, total = _num(state, "kv_free_blocks"), _num(state, "kv_total_blocks")
    kv = None if free is None or not total else round(100.0 * (total - free) / total, 1)
    return InstanceStatus(
        name=inst.name,
        host=inst.host,
        status=inst.status,
        agent_url=inst.agent_url,
        healthy=healthy,
        detail=detail,
        running=_num(state, "running"),
        waiting=_num(state, "waiting"),
        kv_used_pct=kv,
        completed=_num(state, "totals", "completed"),
        e2e_error_p50_pct=_num(state, "errors", "e2e", "p50_ape_pct"),
        ttft_error_p50_pct=_num(state, "errors", "ttft", "p50_ape_pct"),
    )


async def _instance(http: httpx.AsyncClient, inst: InstanceState) -> InstanceStatus:
    health: Any = None
    state: Any = None
    problem = None
    try:
        h = await http.get(f"{inst.agent_url}/health")
        health = h.json()
        s = await http.get(f"{inst.agent_url}/state")
        state = s.json() if s.status_code == 200 else None
        if s.status_code == 401:
            problem = "agent refused the cluster token"
    except httpx.HTTPError as exc:
        problem = f"agent unreachable ({type(exc).__name__})"
    except ValueError:
        problem = "agent answered something that is not JSON"
    return instance_from_agent(inst, health, state, problem)


async def _scheduler(http: httpx.AsyncClient, sched: SchedulerState) -> SchedulerStatus:
    try:
        r = await http.get(f"{sched.url}/health")
        body = r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return SchedulerStatus(sched.url, sched.pid, False, None, None)
    return SchedulerStatus(sched.url, sched.pid, bool(body), body.get("policy"), body.get("instances"))


async def gather_status(state_dir: Path, state: ClusterState, *, timeout_s: float = 3.0) -> ClusterStatus:
    """Ask every agent and scheduler at once (each with ``timeout_s``)."""
    token = read_token(state_dir)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as http:
        instances, schedulers = await asyncio.gather(
            asyncio.gather(*(_instance(http, i) for i in state.instances)),
            asyncio.gather(*(_scheduler(http, s) for s in state.schedulers)),
        )
    return ClusterStatus(
        kind=state.kind,
        policy=state.policy,
        state_dir=str(state_dir),
        instances=tuple(instances),
        schedulers=tuple(schedulers),
    )
