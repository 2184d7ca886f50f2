"""The agent's configuration: engine URL, engine model (profile + vLLM-style overrides), token, identity."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from blockctl.engine.profile import Profile
from blockctl.engine.types import EngineConfig
from blockctl.errors import ConfigError
from blockctl.secrets import read_secret_file


@dataclass(frozen=True, slots=True)
class AgentSettings:
    engine_url: str
    name: str
    profile: str
    engine_config: EngineConfig
    token: str | None = None  # bearer token guarding every endpoint but /health and /metrics
    scrape_interval_s: float = 0.25  # also bounds how late a stalled engine is noticed (+ stall_s)
    connect_retries: int = 2  # extra connection attempts to the engine, only before anything was sent
    tokenizer: str | None = None  # local HF tokenizer dir for counting prompts (else tiktoken), as the engine's
    learn: bool = True  # learn step-time coefficients and the first-token overhead online (learn.py)
    request_overhead_ms: float = 0.0  # the profile's per-request engine overhead: where TTFT learning starts
    max_body_bytes: int = 32 * 1024 * 1024  # larger request bodies get 413 (they are held in memory)
    engine_api_key: str | None = None  # sent to the engine as a Bearer token (vLLM --api-key / VLLM_API_KEY)
    stall_s: float = 1.0  # a /metrics scrape unanswered this long marks the engine sick
    drain_s: float = 5.0  # after SIGTERM: how long requests in flight may still run
    body_timeout_s: float = 30.0  # a caller that takes longer to upload its request body is cut off


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
    token = read_secret_file(p, what="token").strip()
    if not token:
        raise ConfigError("token file is empty", source=str(p))
    return token
