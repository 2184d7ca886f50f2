"""Model shapes, GPU memory, and the number of KV-cache blocks they leave (as vLLM sizes its cache)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from blockctl.errors import ConfigError, ProfileError

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1}
GIB = 1024**3
# Memory vLLM's profiling run sees used outside torch's allocator (cuBLAS/NCCL workspaces, CUDA graphs).
NON_TORCH_BYTES = GIB // 2
SAMPLER_COPIES = 2  # float32 logits of max_num_seqs rows, held twice at the sampler's peak


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The shape of a decoder-only transformer, as in its HF config.json."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    dtype: str = "bfloat16"
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def param_count(self) -> int:
        """Parameters of a Llama-style block stack (RMSNorm, SwiGLU MLP), embeddings and LM head."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * h * 2 + h * kv * 2 + ((h + 2 * kv) if self.qkv_bias else 0)
        layer = attn + 3 * h * self.intermediate_size + 2 * h
        embed = self.vocab_size * h
        return embed * (1 if self.tie_word_embeddings else 2) + self.num_layers * layer + h

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "profile") -> ModelShape:
        try:
            shape = cls(**d)
        except TypeError as exc:
            raise ProfileError(f"{source}: model: {exc}") from None
        if shape.dtype not in DTYPE_BYTES:
            raise ProfileError(f"{source}: model.dtype {shape.dtype!r} is not one of {sorted(DTYPE_BYTES)}")
        ints = (shape.hidden_size, shape.num_layers, shape.num_heads, shape.num_kv_heads,
                shape.intermediate_size, shape.vocab_size, shape.max_position_embeddings)
        if min(ints) <= 0 or shape.hidden_size % shape.num_heads or shape.num_heads % shape.num_kv_heads:
            raise ProfileError(f"{source}: model shape is inconsistent: {shape}")
        return shape


def kv_block_bytes(shape: ModelShape, block_size: int, kv_dtype: str | None = None) -> int:
    """Bytes of one KV block, all layers: 2 (K and V) × layers × block_size × kv_heads × head_dim × dtype."""
    nbytes = DTYPE_BYTES[kv_dtype or shape.dtype]
    return 2 * shape.num_layers * block_size * shape.num_kv_heads * shape.head_dim * nbytes


def activation_peak_bytes(shape: ModelShape, max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """Peak activation memory of vLLM's profiling forward pass (an estimate of what it measures).

    One step of ``max_num_batched_tokens`` tokens: the MLP's gate/up output (2 × intermediate), its activated
    half, the residual stream and attention output (4 × hidden), in the model dtype; plus the sampler's
    float32 logits over ``max_num_seqs`` rows.
    """
    per_token = (3 * shape.intermediate_size + 4 * shape.hidden_size) * shape.dtype_bytes
    sampler = SAMPLER_COPIES * max_num_seqs * shape.vocab_size * 4
    return max_num_batched_tokens * per_token + sampler


def num_kv_blocks(
    gpu_memory_bytes: int,
    shape: ModelShape,
    *,
    gpu_memory_utilization: float = 0.9,
    block_size: int = 16,
    max_num_batched_tokens: int = 2048,
    max_num_seqs: int = 256,
    kv_dtype: str | None = None,
) -> int:
    """KV blocks vLLM would allocate: (total × utilization − weights − activation peak − non-torch) // block.

    Raises ConfigError when nothing is left for the cache.
    """
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(f"must be in (0, 1], got {gpu_memory_utilization}", key="gpu_memory_utilization")
    if block_size <= 0:
        raise ConfigError(f"must be > 0, got {block_size}", key="block_size")
    budget = int(gpu_memory_bytes * gpu_memory_utilization)
    weights = shape.param_count() * shape.dtype_bytes
    available = (budget - weights - activation_peak_bytes(shape, max_num_batched_tokens, max_num_seqs)
                 - NON_TORCH_BYTES)
    blocks = available // kv_block_bytes(shape, block_size, kv_dtype)
    if blocks <= 0:
        raise ConfigError(
            f"{shape.name} ({weights / GIB:.1f} GiB of weights) leaves no memory for the KV cache on a "
            f"{gpu_memory_bytes / GIB:.1f} GiB GPU at gpu_memory_utilization={gpu_memory_utilization}",
            key="gpu_memory_utilization",
        )
    return int(blocks)


# Shapes of the models profiled so far (from their HF config.json).
KNOWN_MODELS: dict[str, ModelShape] = {
    "llama-2-7b": ModelShape(
        name="llama-2-7b", hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
        intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096,
    ),
    "qwen2-7b": ModelShape(
        name="qwen2-7b", hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4,
        intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768, qkv_bias=True,
    ),
}

# Total memory as the CUDA driver reports it (nvidia-smi "Total", MiB × 2**20).
KNOWN_GPUS: dict[str, int] = {
    "NVIDIA H100 80GB HBM3": 81559 * 2**20,
    "NVIDIA H200": 143771 * 2**20,
}
