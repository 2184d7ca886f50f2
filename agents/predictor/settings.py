"""The agent's configuration: engine URL, engine model (profile + vLLM-style overrides), token, identity."""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from blockctl.engine.profile import Profile
from blockctl.engine.types import EngineConfig
from blockctl.errors import ConfigError


@dataclass(frozen=True, slots=True)
class AgentSettings:
    engine_url: str
    name: str
    profile: str
    engine_config: EngineConfig
    token: str | None = None  # bearer token guarding every endpoint but /health and /metrics
    scrape_interval_s: float = 0.5
    connect_retries: int = 2  # extra connection attempts to the engine, only before anything was sent
    tokenizer: str | None = None  # local HF tokenizer dir for counting prompts (else tiktoken), as the engine's
    learn: bool = True  # learn step-time coefficients and the first-token overhead online (learn.py)
    request_overhead_ms: float = 0.0  # the profile's per-request engine overhead: where TTFT learning starts


def engine_config_for(
    profile: Profile,
    *,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    num_gpu_blocks_override: int | None = None,
    block_size: int | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
) -> EngineConfig:
    """The engine config as the engine derives it from the same flags (KV blocks depend on them all)."""
    flags = {
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "num_gpu_blocks_override": num_gpu_blocks_override,
        "block_size": block_size,
        "max_model_len": max_model_len,
    }
    for key, value in flags.items():
        if value is not None and value < 1:
            raise ConfigError(f"must be a positive integer, got {value}", key=key.replace("_", "-"))
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"must be in (0, 1], got {gpu_memory_utilization}", key="gpu-memory-utilization")
    base = EngineConfig()
    config = profile.engine_defaults(
        gpu_memory_utilization=gpu_memory_utilization or 0.9,
        block_size=block_size or base.block_size,
        max_num_seqs=max_num_seqs or base.max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens or base.max_num_batched_tokens,
        max_model_len=max_model_len,
    )
    if num_gpu_blocks_override is not None:
        config = dataclasses.replace(config, num_gpu_blocks=num_gpu_blocks_override)
    return config


def read_token(path: str | Path) -> str:
    """Read the bearer token; refuses a file other users can read (it guards the agent's endpoints)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        token = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read token file: {exc.strerror}", source=str(p)) from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("token file must not be readable by group or others", source=str(p), hint=f"chmod 600 {p}")
    if not token:
        raise ConfigError("token file is empty", source=str(p))
    return token
