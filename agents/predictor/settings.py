"""The agent's configuration: engine URL, engine model (profile + vLLM-style overrides), token, identity."""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from pathlib import Path

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


def engine_config_for(
    defaults: EngineConfig,
    *,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    num_gpu_blocks_override: int | None = None,
    block_size: int | None = None,
    max_model_len: int | None = None,
) -> EngineConfig:
    """The profile's engine defaults with the flags the engine was started with applied on top."""
    overrides = {
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "num_gpu_blocks": num_gpu_blocks_override,
        "block_size": block_size,
        "max_model_len": max_model_len,
    }
    for key, value in overrides.items():
        if value is not None and value < 1:
            raise ConfigError(f"must be a positive integer, got {value}", key=key.replace("_", "-"))
    return dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})


def read_token(path: str | Path) -> str:
    """Read the bearer token; refuses a file other users can read (it guards the agent's endpoints)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        token = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read token file: {exc.strerror}", source=str(p)) from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            "token file must not be readable by group or others", source=str(p), hint=f"chmod 600 {p}"
        )
    if not token:
        raise ConfigError("token file is empty", source=str(p))
    return token
