"""The local cluster's decisions, pure: what ``up --local`` asks for, each instance's ports and command lines,
and what to keep, start and stop when ``up`` runs again.

Ports are fixed by ``base_port`` so that re-running ``up`` finds what it started: schedulers on
``base_port + n``, instance ``i`` has its emulator on ``base_port + 100 + i`` and its agent on
``base_port + 200 + i`` (hence at most 100 of each).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockctl.cluster.state import InstanceState, token_path
from blockctl.engine.profile import DEFAULT_PROFILE
from blockctl.errors import ConfigError

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
    request_log: str | None = None  # each daemon writes it with "-<port>" (default STATE/logs/requests.jsonl)
    request_log_enabled: bool = True
    request_log_max_mb: float | None = None
    request_log_backups: int | None = None
    log_prompts: bool = False
    served_model_name: str = "emulated"
    seed: int = 0  # instance i's emulator uses seed + i
    reply_lengths: str | None = None  # the emulators' reply-length table (blockctl.replytable), never the router's

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
        if spec.reply_lengths is not None:
            settings["reply_lengths"] = spec.reply_lengths
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


def engine_args(settings: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in settings["engine_flags"].items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def argv_for(plan: InstancePlan, state_dir: Path) -> tuple[list[str], list[str]]:
    s = plan.settings
    common = ["--profile", s["profile"], *engine_args(s)]
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
        *(["--reply-lengths", s["reply_lengths"]] if s.get("reply_lengths") else []),
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
