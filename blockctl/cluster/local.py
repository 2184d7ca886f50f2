"""The embedded local cluster: emulated instances with their agents, and scheduler daemons, on this machine.

The decisions (ports, command lines, what to keep or restart) are in ``local_plan``; this module carries
them out: spawn, wait for health, write cluster.json, stop by PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from blockctl.cluster import procs
from blockctl.cluster.local_plan import (
    AGENT_MODULE,
    EMULATOR_MODULE,
    ENGINE_FLAGS,
    InstancePlan,
    LocalSpec,
    argv_for,
    converge,
    instance_plans,
)
from blockctl.cluster.schedulers import converge_schedulers, restart_schedulers, scheduler_specs, stop_schedulers
from blockctl.cluster.state import (
    ClusterState,
    InstanceState,
    ensure_token,
    load_state,
    logs_dir,
    remove_state,
    save_state,
)
from blockctl.errors import ClusterError

__all__ = ["ENGINE_FLAGS", "LocalSpec", "down", "local_cluster", "restart_schedulers", "up"]

Progress = Callable[[str], None]


def _markers(inst: InstanceState) -> list[tuple[int | None, procs.Marker]]:
    s = inst.settings
    return [
        (inst.pids.get("agent"), (AGENT_MODULE, int(s.get("agent_port", 0)))),
        (inst.pids.get("engine"), (EMULATOR_MODULE, int(s.get("engine_port", 0)))),
    ]


def _healthy(inst: InstanceState) -> bool:
    if not all(procs.is_ours(pid, marker) for pid, marker in _markers(inst)):
        return False
    try:
        return httpx.get(f"{inst.agent_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_instances(instances: tuple[InstanceState, ...] | list[InstanceState]) -> list[int]:
    return procs.stop([t for inst in instances for t in _markers(inst)])


def _start(
    plans: tuple[InstancePlan, ...], spec: LocalSpec, state_dir: Path, *, timeout_s: float, token: str
) -> list[InstanceState]:
    for plan in plans:
        for port, what in ((plan.engine_port, "emulator"), (plan.agent_port, "agent")):
            if not procs.port_free(port):
                raise ClusterError(
                    f"port {port} ({plan.name} {what}) is in use by another program",
                    hint="blockctl up --local --base-port PORT",
                )
    started: list[InstanceState] = []
    checks = []
    for plan in plans:
        engine_argv, agent_argv = argv_for(plan, state_dir)
        engine_log = logs_dir(state_dir) / f"{plan.name}-engine.log"
        agent_log = logs_dir(state_dir) / f"{plan.name}-agent.log"
        engine_pid = procs.spawn(engine_argv, engine_log)
        agent_pid = procs.spawn(agent_argv, agent_log)
        started.append(
            InstanceState(
                name=plan.name,
                host="127.0.0.1",
                agent_url=plan.agent_url,
                engine_url=plan.engine_url,
                profile=spec.profile,
                pids={"engine": engine_pid, "agent": agent_pid},
                settings=plan.settings,
            )
        )
        checks += [
            (f"{plan.engine_url}/health", engine_pid, engine_log),
            (f"{plan.agent_url}/health", agent_pid, agent_log),
        ]
    try:
        procs.wait_healthy(checks, timeout_s=timeout_s, token=token)
    except ClusterError:
        _stop_instances(started)
        raise
    return started


def up(
    spec: LocalSpec, state_dir: Path, *, timeout_s: float = 60.0, progress: Progress | None = None
) -> ClusterState:
    """Bring the local cluster to ``spec`` (converging from whatever runs now); returns the new state."""
    say = progress or (lambda _msg: None)
    spec.validate()
    sched_specs = scheduler_specs(
        spec.schedulers,
        base_port=spec.base_port,
        policy=spec.policy,
        k=spec.k,
        tagger=spec.tagger,
        predict_timeout_ms=spec.predict_timeout_ms,
        api_key_file=spec.api_key_file,
        host=spec.scheduler_host,
        request_log=spec.request_log,
        request_log_enabled=spec.request_log_enabled,
        request_log_max_mb=spec.request_log_max_mb,
        request_log_backups=spec.request_log_backups,
        log_prompts=spec.log_prompts,
    )
    old = load_state(state_dir)
    if old is not None and old.kind != "local" and old.instances:
        raise ClusterError(f"an SSH cluster is recorded in {state_dir}", hint="blockctl down")
    token = ensure_token(state_dir)
    existing = old.instances if old is not None else ()
    plan = converge(existing, {i.name: _healthy(i) for i in existing}, instance_plans(spec))
    if plan.stop:
        say(f"stopping {', '.join(i.name for i in plan.stop)}")
        _stop_instances(plan.stop)
    state = ClusterState(
        kind="local",
        policy=spec.policy,
        instances=plan.keep,
        schedulers=old.schedulers if old is not None else (),
        settings={"base_port": spec.base_port, "profile": spec.profile},
    )
    if plan.start:
        say(f"starting {', '.join(p.name for p in plan.start)}")
        try:
            started = _start(plan.start, spec, state_dir, timeout_s=timeout_s, token=token)
        finally:
            save_state(state_dir, state)  # what runs now, so `down` can always stop it
        instances = sorted((*plan.keep, *started), key=lambda i: int(i.settings["index"]))
        state = dataclasses.replace(state, instances=tuple(instances))
        save_state(state_dir, state)
    say("starting schedulers")
    try:
        schedulers = converge_schedulers(state_dir, state.schedulers, sched_specs, timeout_s=timeout_s)
    except ClusterError:
        save_state(state_dir, dataclasses.replace(state, schedulers=()))
        raise
    state = dataclasses.replace(state, schedulers=schedulers)
    save_state(state_dir, state)
    return state


def down(state_dir: Path, *, timeout_s: float = 10.0) -> list[int]:
    """Stop every local process cluster.json records (by PID, only if still ours); remove cluster.json.

    For an SSH cluster only the local schedulers are stopped here; its hosts are the SSH code's to stop.
    """
    from blockctl.cluster import autoscaler  # it would act on the cluster being stopped

    autoscaler.stop(state_dir, timeout_s=timeout_s)
    state = load_state(state_dir)
    if state is None:
        return []
    stopped = stop_schedulers(state.schedulers, timeout_s=timeout_s)
    if state.kind == "local":
        stopped += _stop_instances(state.instances)
    remove_state(state_dir)
    return stopped


@contextlib.contextmanager
def local_cluster(spec: LocalSpec, state_dir: Path, *, timeout_s: float = 60.0) -> Iterator[ClusterState]:
    """A local cluster for the duration of a ``with`` block (benchmarks, tests); always brought down."""
    try:
        yield up(spec, state_dir, timeout_s=timeout_s)
    finally:
        down(state_dir)
