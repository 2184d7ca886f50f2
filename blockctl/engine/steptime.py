"""The step-time model: how long one engine step takes on a GPU, from the step's composition.

Form (all coefficients non-negative, so the model is positive and monotone in every input)::

    gpu_ms = const_ms
           + (linear_mem_ms ** p + (linear_ms_per_token * N) ** p) ** (1 / p)   # linear layers: weight-read
                                                                             # floor, then compute-bound
           + prefill_attn_ms_per_mpair * prefill_attn / 1e6      # causal attention of prefill chunks
           + cached_ms_per_ktoken * prefill_cached / 1e3         # reading a chunk's cached prefix
           + decode_attn_ms_per_ktoken * decode_context / 1e3    # KV read of every decode sequence
           + lm_head_ms_per_krow * (prefill_seqs + decode_batch) / 1e3
           + mixed_step_ms   if the step has both prefill chunks and decode sequences

with ``N = prefill_tokens + decode_batch`` (every token of the step goes through the linear layers together).
``mixed_step_ms`` is the cost of running both attention paths (prefill chunks and the decode batch) in one step,
as the profiled steps do (one attention call for each, in every layer).
``step_seconds`` adds ``overhead_ms``, the engine's CPU time per step, which GPU profiles do not contain.
``token_ms`` (empty in profiles; the agent learns it online) corrects the linear layers at a few small token
counts: an engine's kernels run some batch shapes faster or slower than any smooth curve says (GEMM kernel
choice by shape, CUDA-graph padding to capture sizes), so with it the model is no longer monotone in ``N``.

NOTE: the model is affine in ``decode_context`` for a fixed batch; the engine relies on this to jump over
stretches of pure-decode steps in closed form (:meth:`StepTimeModel.decode_run_ms`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from blockctl.engine.types import StepShape
from blockctl.errors import ProfileError

DEFAULT_OVERHEAD_MS = 1.5  # vLLM V1 CPU time per step not hidden behind the GPU (scheduling, sampling, detok)


@dataclass(frozen=True, slots=True)
class StepTimeParams:
    """Fitted coefficients of the step-time model (milliseconds; see the module docstring)."""

    const_ms: float
    linear_mem_ms: float
    linear_ms_per_token: float
    roofline_p: float
    prefill_attn_ms_per_mpair: float
    cached_ms_per_ktoken: float
    decode_attn_ms_per_ktoken: float
    lm_head_ms_per_krow: float
    mixed_step_ms: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "profile") -> StepTimeParams:
        names = [f.name for f in fields(cls)]
        data = {"mixed_step_ms": 0.0, **data}  # optional: absent in the first profiles of this format
        missing = [n for n in names if n not in data]
        if missing:
            raise ProfileError(f"{source}: fit.params lacks {', '.join(missing)}")
        values: dict[str, float] = {}
        for n in names:
            v = data[n]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ProfileError(f"{source}: fit.params.{n} must be a finite number >= 0, got {v!r}")
            values[n] = float(v)
        if values["roofline_p"] < 1.0:
            raise ProfileError(f"{source}: fit.params.roofline_p must be >= 1, got {values['roofline_p']}")
        return cls(**values)

    def as_vector(self) -> list[float]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True, slots=True)
class StepTimeModel:
    """Step durations from fitted parameters; ``rel_noise`` is the relative spread of one step's time.

    Immutable (``dataclasses.replace`` to change the overhead): it memoises per-token-count terms.
    """

    params: StepTimeParams
    overhead_ms: float = DEFAULT_OVERHEAD_MS
    rel_noise: float = 0.0
    token_ms: tuple[float, ...] = ()  # added to linear_ms(n) for n < len (module docstring); the sum kept >= 0
    _linear_cache: list[float] = field(init=False, repr=False, compare=False)
    _decode_cache: dict[int, tuple[float, float]] = field(init=False, repr=False, compare=False)
    _decode_table: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_linear_cache", [])
        object.__setattr__(self, "_decode_cache", {})
        object.__setattr__(self, "_decode_table", [])
        if not (self.overhead_ms >= 0 and math.isfinite(self.overhead_ms)):
            raise ProfileError(f"overhead_ms must be a finite number >= 0, got {self.overhead_ms!r}")
        if not (self.rel_noise >= 0 and math.isfinite(self.rel_noise)):
            raise ProfileError(f"rel_noise must be a finite number >= 0, got {self.rel_noise!r}")

    def linear_ms(self, n: int) -> float:
        """Time of the linear layers on ``n`` tokens (memoised: the engine asks for the same n often)."""
        cache = self._linear_cache
        if n < len(cache):
            return cache[n]
        p = self.params
        if n < 65536:
            start = len(cache)
            pw, mem, slope = p.roofline_p, p.linear_mem_ms**p.roofline_p, p.linear_ms_per_token
            cache.extend((mem + (slope * i) ** pw) ** (1.0 / pw) for i in range(start, n + 1))
            for i in range(start, min(n + 1, len(self.token_ms))):
                cache[i] = max(0.0, cache[i] + self.token_ms[i])
            return cache[n]
        return float((p.linear_mem_ms**p.roofline_p + (p.linear_ms_per_token * n) ** p.roofline_p)
                     ** (1.0 / p.roofline_p))

    def gpu_ms_raw(
        self,
        prefill_tokens: int,
        prefill_seqs: int,
        prefill_attn: float,
        prefill_cached: int,
        decode_batch: int,
        decode_context: int,
    ) -> float:
        """GPU milliseconds of one step, without the per-step overhead (comparable to profile rows)."""
        p = self.params
        return (
            p.const_ms
            + self.linear_ms(prefill_tokens + decode_batch)
            + p.prefill_attn_ms_per_mpair * prefill_attn * 1e-6
            + p.cached_ms_per_ktoken * prefill_cached * 1e-3
            + p.decode_attn_ms_per_ktoken * decode_context * 1e-3
            + p.lm_head_ms_per_krow * (prefill_seqs + decode_batch) * 1e-3
            + (p.mixed_step_ms if prefill_seqs and decode_batch else 0.0)
        )

    def gpu_ms(self, shape: StepShape) -> float:
        return self.gpu_ms_raw(
            shape.prefill_tokens, shape.prefill_seqs, shape.prefill_attn, shape.prefill_cached,
            shape.decode_batch, shape.decode_context,
        )

    def step_seconds(self, shape: StepShape) -> float:
        """Wall time of one engine step: GPU time plus the per-step overhead."""
        return (self.gpu_ms(shape) + self.overhead_ms) * 1e-3

    def prefill_seconds(self, prompt_tokens: int, cached: int, running: int, budget: int) -> float:
        """Step time added by prefilling ``prompt_tokens - cached`` tokens in chunks beside ``running`` decodes
        (each chunk as large as the step's token ``budget`` leaves): the sum over chunks of the step with the
        chunk minus the decode step alone. What the other requests on the instance wait for this prefill."""
        left, done = prompt_tokens - cached, cached
        chunk = max(1, budget - running)
        base = self.gpu_ms_raw(0, 0, 0.0, 0, running, 0)
        total = 0.0
        while left > 0:
            n = min(left, chunk)
            total += self.gpu_ms_raw(n, 1, n * (done + (n + 1) / 2), done, running, 0) - base
            left -= n
            done += n
        return total * 1e-3

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        """(a, b) such that a pure-decode step of ``batch`` sequences with context sum C takes a + b*C ms,
        overhead included."""
        ab = self._decode_cache.get(batch)
        if ab is None:
            p = self.params
            a = p.const_ms + self.linear_ms(batch) + p.lm_head_ms_per_krow * batch * 1e-3 + self.overhead_ms
            ab = self._decode_cache[batch] = (a, p.decode_attn_ms_per_ktoken * 1e-3)
        return ab

    def decode_table(self, max_batch: int) -> tuple[list[float], float]:
        """``(a, b)`` with ``a[n], b == decode_coeffs(n)`` for every ``n <= max_batch`` (a list for hot loops)."""
        table = self._decode_table
        for n in range(len(table), max_batch + 1):
            table.append(self.decode_coeffs(n)[0])
        return table, self.params.decode_attn_ms_per_ktoken * 1e-3

    def decode_run_ms(self, batch: int, context_sum: int, steps: int) -> float:
        """Total time (ms, overhead included) of ``steps`` pure-decode steps of a constant batch whose
        context sum starts at ``context_sum`` and grows by ``batch`` each step."""
        a, b = self.decode_coeffs(batch)
        return steps * (a + b * context_sum) + b * batch * steps * (steps - 1) * 0.5
