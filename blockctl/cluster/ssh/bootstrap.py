"""`blockctl up -c` for SSH hosts: every host at once through named, idempotent stages; per-host outcomes.

Stages per host: connect → probe → plan → install → token → start-engine → wait-engine → start-agent →
wait-agent. A host either ends fully serving or with none of its blockctl processes left running (on a
failure everything under its run dir is stopped). A transport failure after connect re-runs the host's
stages once (they are idempotent); any other failure is final and reported as a HostError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from blockctl.cluster.spec import ClusterSpec, HostSpec
from blockctl.cluster.ssh import processes
from blockctl.cluster.ssh.connection import HostConn, TransportFailure, connect
from blockctl.cluster.ssh.hostlog import HostLog, host_log_path, tail_text
from blockctl.cluster.ssh.install import Wheel, build_wheel, install
from blockctl.cluster.ssh.plan import InstancePlan, RemotePaths, plan_host
from blockctl.cluster.ssh.probe import probe
from blockctl.cluster.state import InstanceState
from blockctl.errors import HostError
from blockctl.secrets import read_secret_file

AGENT_TIMEOUT_S = 60.0
REACH_TIMEOUT_S = 15.0
MEASURE_TIMEOUT_S = 1800.0  # profiles.measure: `blockctl profile engine` against one engine


@dataclass(slots=True)
class HostOutcome:
    host: str
    instances: list[InstanceState] = field(default_factory=list)
    error: HostError | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "install: up to date", "engine-0: kept"
    log_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def _all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Await all; on the first failure cancel the rest and raise it (no task is left running)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task in done and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _reachable(url: str, timeout_s: float) -> str | None:
    """None when ``url``/health answers 200 from here within ``timeout_s``, else the last problem."""
    problem = "no answer"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(timeout=3.0, trust_env=False) as client:
        while loop.time() < deadline:
            try:
                response = await client.get(f"{url}/health")
                if response.status_code == 200:
                    return None
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.5)
    return problem


async def _measured(conn: HostConn, plan: InstancePlan, outcome: HostOutcome) -> InstancePlan:
    """Profile ``plan``'s engine through its API; when that fails, the agent runs the profile the spec names
    (or the default) instead, and the host's outcome says so: a profile is worth having, not worth an outage."""
    if not plan.measure_command:
        return plan
    what = f"profile engine-{plan.index}"
    try:
        done = await conn.run(plan.measure_command, check=False, timeout=MEASURE_TIMEOUT_S, what=what)
        problem = None if done.exit_status == 0 else (
            f"exit status {done.exit_status}: {tail_text(done.stderr) or 'no message'}")
    except TransportFailure:
        raise  # the host is gone, not the measurement
    except HostError as exc:  # it did not finish in time
        problem = exc.message
    if problem is None:
        return plan
    conn.log.write(f"measuring {plan.name}'s profile failed ({problem}); its agent uses {plan.profile}")
    outcome.notes.append(f"{plan.name}: profile measurement failed, agent uses {plan.profile} (see the host log)")
    return dataclasses.replace(plan, agent_command=plan.fallback_agent_command)


async def _start_instances(
    conn: HostConn, spec: ClusterSpec, paths: RemotePaths, plans: list[InstancePlan], outcome: HostOutcome
) -> list[InstanceState]:
    log = conn.log
    with log.stage("start-engine"):
        engines = [await processes.ensure(conn, paths, p, "engine") for p in plans]
    with log.stage("wait-engine"):
        await _all(
            [
                processes.wait_healthy(conn, paths, p, "engine", e.pid, spec.engine.health_timeout_s)
                for p, e in zip(plans, engines, strict=True)
            ]
        )
    if any(p.measure_command for p in plans):
        with log.stage("measure-profile"):  # profiles.measure: the agent starts with its engine's own profile
            plans = [await _measured(conn, p, outcome) for p in plans]
    with log.stage("start-agent"):
        agents = [await processes.ensure(conn, paths, p, "agent") for p in plans]
    with log.stage("wait-agent"):
        await _all(
            [
                processes.wait_healthy(conn, paths, p, "agent", a.pid, AGENT_TIMEOUT_S)
                for p, a in zip(plans, agents, strict=True)
            ]
        )
        for p in plans:
            problem = await _reachable(p.agent_url, REACH_TIMEOUT_S)
            if problem is not None:
                raise HostError(
                    f"agent-{p.index} is healthy on the host but not reachable from here at {p.agent_url} "
                    f"({problem})",
                    host=conn.label,
                    stage="wait-agent",
                    hint="set hosts[].agent_address to an address this machine reaches, or open the port",
                )
    states = []
    for p, e, a in zip(plans, engines, agents, strict=True):
        outcome.notes.append(
            f"{p.name}: engine {'kept' if e.kept else 'started'}, agent {'kept' if a.kept else 'started'}"
        )
        states.append(
            InstanceState(
                name=p.name,
                host=conn.label,
                agent_url=p.agent_url,
                engine_url=f"http://127.0.0.1:{p.engine_port}",
                profile=p.profile,
                gpus=p.gpus,
                pids={"engine": e.pid, "agent": a.pid},
                settings={
                    "index": p.index,
                    "root": paths.root,
                    "engine_port": p.engine_port,
                    "agent_port": p.agent_port,
                    "engine_fp": p.fingerprint("engine"),
                },
            )
        )
    return states


async def _host_once(
    spec: ClusterSpec, host: HostSpec, token: str, wheel: Wheel | None, log: HostLog, outcome: HostOutcome
) -> list[InstanceState]:
    with log.stage("connect"):
        conn = await connect(host, spec.ssh, log)
    paths: RemotePaths | None = None
    try:
        with log.stage("probe"):
            found = await probe(conn, spec.install.python)
        with log.stage("plan"):
            peer = conn.conn.get_extra_info("peername")
            paths, plans = plan_host(spec, host, found, peer=peer[0] if peer else None)
            log.write(
                f"{len(plans)} instance(s): "
                + "; ".join(f"{p.name} gpus={list(p.gpus)} profile={p.profile}" for p in plans)
            )
        with log.stage("install"):
            outcome.notes.append("install: " + await install(conn, spec.install, paths, found, wheel))
        with log.stage("token"):
            await conn.write_file(paths.token, (token + "\n").encode(), mode=0o600)
            if spec.engine.api_key_file:  # the engine requires it (env file, 0600); the agent reads this file
                key = read_secret_file(spec.engine.api_key_file, what="engine API key",
                                       key="engine.api_key_file").strip()
                await conn.write_file(paths.engine_key, (key + "\n").encode(), mode=0o600)
                plans = [dataclasses.replace(p, engine_env={**p.engine_env, "VLLM_API_KEY": key}) for p in plans]
        return await _start_instances(conn, spec, paths, plans, outcome)
    except HostError as exc:
        if paths is not None and not isinstance(exc, TransportFailure):
            try:
                with log.stage("cleanup"):
                    await processes.stop_all(conn, paths)
            except HostError:
                pass  # logged by the stage; the original failure is what the user needs
        raise
    finally:
        await conn.close()


async def bring_up_host(
    spec: ClusterSpec, host: HostSpec, *, token: str, wheel: Wheel | None, logs_dir: Path
) -> HostOutcome:
    """Run every stage on one host; never raises — the outcome carries the HostError."""
    log = HostLog(host_log_path(logs_dir, host.label), host.label)
    outcome = HostOutcome(host=host.label, log_path=log.path)
    log.write(f"=== blockctl up: {host.label}")
    for attempt in (1, 2):
        try:
            outcome.instances = await _host_once(spec, host, token, wheel, log, outcome)
            outcome.error = None
            return outcome
        except TransportFailure as exc:
            outcome.error = exc
            if exc.stage == "connect" or attempt == 2:
                break
            log.write("transport failure after connect; re-running the (idempotent) stages once")
        except HostError as exc:
            outcome.error = exc
            break
        except Exception as exc:  # a bug or an unforeseen failure: still one host's problem, reported as such
            outcome.error = HostError(
                f"{type(exc).__name__}: {exc}", host=host.label, stage=log.current_stage
            )
            log.write(f"unexpected error: {type(exc).__name__}: {exc}")
            break
    return outcome


async def bring_up(
    spec: ClusterSpec, *, token: str, logs_dir: Path, work_dir: Path | None = None
) -> list[HostOutcome]:
    """Bring every non-standby host up at once; one outcome per host, in spec order."""
    hosts = [h for h in spec.hosts if not h.standby]
    wheel = None
    if spec.install.mode == "wheel":
        out = work_dir or Path(tempfile.mkdtemp(prefix="blockctl-wheel-"))
        wheel = await build_wheel(spec.install, out)
    return list(
        await asyncio.gather(
            *(bring_up_host(spec, h, token=token, wheel=wheel, logs_dir=logs_dir) for h in hosts)
        )
    )
