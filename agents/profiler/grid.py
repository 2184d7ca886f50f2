"""The grid of step compositions to time; the default matches the measured seed profiles."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GridPoint:
    """One step: a prefill chunk of ``prefill_tokens`` over ``prefill_cached`` cached tokens, plus
    ``decode_batch`` sequences each decoding one token over ``decode_context`` cached tokens."""

    prefill_tokens: int
    prefill_cached: int
    decode_batch: int
    decode_context: int

    def as_row(self) -> dict[str, int]:
        return {
            "prefill_tokens": self.prefill_tokens,
            "prefill_cached": self.prefill_cached,
            "decode_batch": self.decode_batch,
            "decode_context": self.decode_context,
        }


@dataclass(frozen=True, slots=True)
class GridSpec:
    prefill_tokens: tuple[int, ...] = (0, 16, 64, 256, 512, 1024, 2048)
    prefill_cached: tuple[int, ...] = (0, 1024)
    decode_batch: tuple[int, ...] = (0, 1, 8, 32, 64, 128, 256)
    decode_context: tuple[int, ...] = (256, 1024, 2048)
    max_decode_tokens: int = 65536  # cap on decode_batch × decode_context (KV read per step)

    def capped(self, *, max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int) -> GridSpec:
        """Only what an engine with these limits can run (the limit itself is kept as a grid value)."""

        def cap(values: tuple[int, ...], limit: int) -> tuple[int, ...]:
            kept = {v for v in values if v <= limit}
            if any(v > limit for v in values):
                kept.add(limit)
            return tuple(sorted(kept))

        return GridSpec(
            prefill_tokens=cap(self.prefill_tokens, max_num_batched_tokens),
            prefill_cached=tuple(c for c in self.prefill_cached if c < max_model_len),
            decode_batch=cap(self.decode_batch, max_num_seqs),
            decode_context=cap(self.decode_context, max_model_len),
            max_decode_tokens=self.max_decode_tokens,
        )


DEFAULT_GRID = GridSpec()
# The CPU grid runs the same code path on a tiny shape in seconds.
QUICK_GRID = GridSpec(
    prefill_tokens=(0, 16, 64), prefill_cached=(0, 64), decode_batch=(0, 1, 4), decode_context=(32, 128)
)


def points(spec: GridSpec) -> list[GridPoint]:
    """Every step of the grid: prefill-only, decode-only and mixed steps (never an empty step)."""
    out: list[GridPoint] = []
    for p in spec.prefill_tokens:
        for c in spec.prefill_cached if p else (0,):
            for b in spec.decode_batch:
                if p == 0 and b == 0:
                    continue
                contexts = [x for x in spec.decode_context if b * x <= spec.max_decode_tokens] if b else [0]
                out.extend(GridPoint(p, c, b, d) for d in contexts)
    return out
