"""The embedded local cluster: emulated instances with their agents, and scheduler daemons, on this machine.

Ports are fixed by ``base_port`` so that re-running ``up`` finds what it started: schedulers on
``base_port + n``, instance ``i`` has its emulator on ``base_port + 100 + i`` and its agent on
``base_port + 200 + i`` (hence at most 100 of each).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from blockctl.cluster import procs
from blockctl.cluster.schedulers import converge_schedulers, scheduler_specs, stop_schedulers
from blockctl.cluster.state import (
    ClusterState,
    InstanceState,
    ensure_token,
    load_state,
    logs_dir,
    remove_state,
    save_state,
    token_path,
)
from blockctl.engine.profile import DEFAULT_PROFILE
from blockctl.errors import ClusterError, ConfigError

EMULATOR_MODULE = "blockctl_agents.emulator"
AGENT_MODULE = "blockctl_agents.predictor"
ENGINE_FLAGS = (
    "max_num_seqs",
    "max_num_batched_tokens",
    "num_gpu_blocks_override",
    "block_size",
    "max_model_len",
)
MAX_EACH = 100

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LocalSpec:
    """What ``blockctl up --local`` is asked for."""

    instances: int = 2
    schedulers: int = 1
    policy: str = "block"
    profile: str = DEFAULT_PROFILE
    base_port: int = 8000
    engine_flags: Mapping[str, int] = field(default_factory=dict)  # ENGINE_FLAGS -> value (both sides)
    k: int | None = None
    tagger: str | None = None
    predict_timeout_ms: float | None = None
    api_key_file: str | None = None
    scheduler_host: str = "127.0.0.1"
    served_model_name: str = "emulated"
    seed: int = 0  # instance i's emulator uses seed + i

    def validate(self) -> None:
        for key, value, low, high in (
            ("instances", self.instances, 1, MAX_EACH),
            ("schedulers", self.schedulers, 1, MAX_EACH),
            ("base-port", self.base_port, 1024, 65535 - 200 - MAX_EACH),
        ):
            if not low <= value <= high:
                raise ConfigError(f"must be between {low} and {high}, got {value}", key=key)
        unknown = set(self.engine_flags) - set(ENGINE_FLAGS)
        if unknown:
            raise ConfigError(f"unknown engine flag(s) {', '.join(sorted(unknown))}", key="engine_flags")
        for key, value in self.engine_flags.items():
            if value < 1:
                raise ConfigError(f"must be at least 1, got {value}", key=key.replace("_", "-"))


@dataclass(frozen=True, slots=True)
class InstancePlan:
    name: str
    engine_port: int
    agent_port: int
    settings: dict[str, Any]  # everything its processes are started with; a change means a restart

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.agent_port}"


def instance_plans(spec: LocalSpec) -> list[InstancePlan]:
    plans = []
    for i in range(spec.instances):
        engine_port, agent_port = spec.base_port + 100 + i, spec.base_port + 200 + i
        settings = {
            "index": i,
            "engine_port": engine_port,
            "agent_port": agent_port,
            "profile": spec.profile,
            "seed": spec.seed + i,
            "served_model_name": spec.served_model_name,
            "engine_flags": dict(sorted(spec.engine_flags.items())),
        }
        plans.append(InstancePlan(f"i{i}", engine_port, agent_port, settings))
    return plans


@dataclass(frozen=True, slots=True)
class Convergence:
    """What ``up`` does to the instances: keep the healthy unchanged ones, (re)start the rest, stop extras."""

    keep: tuple[InstanceState, ...]
    start: tuple[InstancePlan, ...]
    stop: tuple[InstanceState, ...]


def converge(
    existing: tuple[InstanceState, ...], healthy: Mapping[str, bool], wanted: list[InstancePlan]
) -> Convergence:
    """Pure: ``healthy`` says, per existing instance name, whether its processes run and answer."""
    by_name = {inst.name: inst for inst in existing}
    keep, start, stop = [], [], []
    for plan in wanted:
        inst = by_name.pop(plan.name, None)
        if inst is not None and healthy.get(inst.name, False) and inst.settings == plan.settings:
            keep.append(inst)
            continue
        if inst is not None:
            stop.append(inst)
        start.append(plan)
    stop.extend(by_name.values())
    return Convergence(tuple(keep), tuple(start), tuple(stop))


def _engine_args(settings: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in settings["engine_flags"].items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _argv(plan: InstancePlan, state_dir: Path) -> tuple[list[str], list[str]]:
    s = plan.settings
    common = ["--profile", s["profile"], *_engine_args(s)]
    engine = [
        sys.executable,
        "-m",
        EMULATOR_MODULE,
        "--host",
        "127.0.0.1",
        "--port",
        str(plan.engine_port),
        "--served-model-name",
        s["served_model_name"],
        "--seed",
        str(s["seed"]),
        *common,
    ]
    agent = [
        sys.executable,
        "-m",
        AGENT_MODULE,
        "--engine-url",
        plan.engine_url,
        "--host",
        "127.0.0.1",
        "--port",
        str(plan.agent_port),
        "--token-file",
        str(token_path(state_dir)),
        "--name",
        plan.name,
        *common,
    ]
    return engine, agent


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
        engine_argv, agent_argv = _argv(plan, state_dir)
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
