"""Which model to profile: a shape from config.json (only the config, never weights), and one GPU's share of it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockctl.engine.shape import DTYPE_BYTES, KNOWN_MODELS, ModelShape
from blockctl.errors import ConfigError, ProfileError

# A few-MB shape that runs the profiler's code path on a CPU in seconds.
TINY = ModelShape(
    name="tiny",
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    vocab_size=512,
    dtype="float32",
    max_position_embeddings=512,
)
BUILTIN: dict[str, ModelShape] = {**KNOWN_MODELS, "tiny": TINY}


@dataclass(frozen=True, slots=True)
class ShardDims:
    """The tensor sizes one GPU holds under Megatron-style tensor parallelism of size ``tp``."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    vocab: int
    dtype: str
    tp: int


def shard(shape: ModelShape, tp: int = 1) -> ShardDims:
    """Heads, KV heads and the MLP split across ``tp`` GPUs; KV heads replicated when fewer than ``tp`` (as vLLM
    does); the LM head is split by vocabulary."""
    if tp < 1 or shape.num_heads % tp or shape.intermediate_size % tp:
        raise ConfigError(
            f"tensor-parallel size {tp} must divide {shape.num_heads} heads and MLP size {shape.intermediate_size}",
            key="--tp",
        )
    return ShardDims(
        hidden=shape.hidden_size,
        layers=shape.num_layers,
        heads=shape.num_heads // tp,
        kv_heads=max(1, shape.num_kv_heads // tp),
        head_dim=shape.head_dim,
        mlp=shape.intermediate_size // tp,
        vocab=-(-shape.vocab_size // tp),
        dtype=shape.dtype,
        tp=tp,
    )


def from_hf_config(cfg: dict[str, Any], name: str) -> ModelShape:
    """A shape from a Hugging Face ``config.json`` (Llama/Qwen/Mistral-style decoder keys)."""
    try:
        heads = int(cfg["num_attention_heads"])
        doc = {
            "name": name,
            "hidden_size": int(cfg["hidden_size"]),
            "num_layers": int(cfg["num_hidden_layers"]),
            "num_heads": heads,
            "num_kv_heads": int(cfg.get("num_key_value_heads") or heads),
            "intermediate_size": int(cfg["intermediate_size"]),
            "vocab_size": int(cfg["vocab_size"]),
            "dtype": _dtype(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
            "max_position_embeddings": int(cfg.get("max_position_embeddings") or 4096),
            "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        }
    except KeyError as exc:
        raise ConfigError(f"config.json lacks {exc.args[0]!r}", source=name, key=str(exc.args[0])) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config.json has a malformed value: {exc}", source=name) from None
    try:
        return ModelShape.from_dict(doc, source=name)
    except ProfileError as exc:
        raise ConfigError(exc.message, source=name) from None


def _dtype(value: object) -> str:
    text = str(value).removeprefix("torch.")
    return text if text in DTYPE_BYTES else "bfloat16"


def resolve(model: str) -> ModelShape:
    """``model`` is a built-in shape name, a directory or file holding config.json, or a Hugging Face id
    (only its config.json is downloaded, through huggingface_hub)."""
    if model in BUILTIN:
        return BUILTIN[model]
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read model config: {exc}", source=str(path)) from None
        return from_hf_config(cfg, path.parent.name if path.name == "config.json" else path.stem)
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return _from_hub(model)
    raise ConfigError(
        f"unknown model {model!r}: not a built-in shape ({', '.join(BUILTIN)}), a directory holding "
        "config.json, or a Hugging Face id",
        key="--model",
    )


def _from_hub(model_id: str) -> ModelShape:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ConfigError(
            f"{model_id!r} looks like a Hugging Face id but huggingface_hub is not installed",
            key="--model",
            hint="pip install 'blockctl[profile]'",
        ) from None
    try:
        cfg_path = hf_hub_download(model_id, "config.json")
    except Exception as exc:  # network, auth, missing repo: all the user's to fix
        raise ConfigError(
            f"cannot fetch config.json of {model_id!r}: {type(exc).__name__}",
            key="--model",
            hint="pass a local directory holding config.json, or a built-in shape name",
        ) from None
    return from_hf_config(json.loads(Path(cfg_path).read_text()), model_id.rsplit("/", 1)[-1].lower())
