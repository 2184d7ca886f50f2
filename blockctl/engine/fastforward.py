"""Fast-forward of an Engine: stretches of pure-decode steps are jumped in closed form, the rest stepped.

A stretch is jumpable when every running request is decoding (one token each, all within the budget) and
no waiting request can be admitted (queue empty, ``max_num_seqs`` reached, no budget left, or the head's
first chunk does not fit in the blocks left). It then stays constant until the first request finishes, the
KV cache would run out (the step after that preempts), or the time limit; its step times form an arithmetic
sequence (the step-time model is affine in the decode context sum), so k steps cost O(batch), not O(k·batch).
Without noise the result equals step-by-step execution up to float rounding.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from blockctl.engine.types import Phase, Request

if TYPE_CHECKING:
    from blockctl.engine.core import Engine


def advance(eng: Engine, t: float, stop: Request | None, finished: list[Request]) -> None:
    """Run steps that start before ``t`` until idle or until ``stop`` has finished."""
    while eng.now < t and (eng.running or eng.waiting):
        if stop is not None and stop.phase == Phase.FINISHED:
            return
        if eng.fast_forward and _try_jump(eng, t, finished):
            continue
        res = eng.step()
        if res is None:
            return
        finished.extend(res.finished)


def blocks_needed(offsets: list[int], steps: int, bs: int) -> int:
    """New blocks the decoders need over ``steps`` steps; ``offsets[i] = (computed_i - 1) % bs``."""
    return sum((o + steps) // bs for o in offsets)


def _max_steps_for_blocks(offsets: list[int], limit: int, free: int, bs: int) -> int:
    """Largest j <= limit with blocks_needed(j) <= free (blocks_needed is non-decreasing in j)."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if blocks_needed(offsets, mid, bs) <= free:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _steps_starting_before(a: float, b: float, batch: int, ctx: int, limit: int, span_ms: float) -> int:
    """How many of the next ``limit`` steps start within ``span_ms``: step j starts at
    S(j) = j*(a + b*ctx) + b*batch*j*(j-1)/2 and S is increasing."""
    base, inc = a + b * ctx, b * batch

    def start(j: int) -> float:
        return j * base + inc * j * (j - 1) * 0.5

    if start(limit - 1) < span_ms:
        return limit
    if inc > 0:
        # Solve inc/2 j^2 + (base - inc/2) j - span = 0 for the crossing, then fix rounding.
        qb = base - inc * 0.5
        j = int((-qb + math.sqrt(qb * qb + 2.0 * inc * span_ms)) / inc)
    else:
        j = int(span_ms / base)
    j = max(0, min(j, limit - 1))
    while j > 0 and start(j) >= span_ms:
        j -= 1
    while j + 1 < limit and start(j + 1) < span_ms:
        j += 1
    return j + 1 if start(j) < span_ms else 0


def _try_jump(eng: Engine, t: float, finished: list[Request]) -> bool:
    running = eng.running
    batch = len(running)
    cfg = eng.config
    budget = cfg.max_num_batched_tokens
    if batch == 0 or batch > budget or eng._pending is not None:
        return False
    k = 1 << 62
    ctx = 0
    for r in running:
        c, out = r.num_computed_tokens, r.num_output_tokens
        if out == 0 or c != r.prompt_tokens + out - 1:
            return False
        rem = r.output_tokens - out
        if rem < k:
            k = rem
        ctx += c
    if k <= 1:
        return False
    bs = eng._bs
    free = eng.free_blocks
    offsets: list[int] | None = None
    if eng.waiting and batch < cfg.max_num_seqs and budget > batch:
        offsets = [(r.num_computed_tokens - 1) % bs for r in running]
        if eng.admission_blocks(eng.waiting[0], budget - batch) <= free - blocks_needed(offsets, 1, bs):
            return False  # the head is admitted next step: not a constant stretch
    if batch * -(-k // bs) > free:
        if offsets is None:
            offsets = [(r.num_computed_tokens - 1) % bs for r in running]
        if blocks_needed(offsets, k, bs) > free:
            k = _max_steps_for_blocks(offsets, k - 1, free, bs)
            if k <= 1:
                return False
    a, b = eng.model.decode_coeffs(batch)
    if t != math.inf:
        k = _steps_starting_before(a, b, batch, ctx, k, (t - eng.now) * 1e3)
        if k <= 1:
            return False
    dur_ms = k * (a + b * ctx) + b * batch * k * (k - 1) * 0.5
    noise = eng._noise
    if noise:
        first, inc = a + b * ctx, b * batch
        sq = k * first * first + first * inc * k * (k - 1) + inc * inc * (k - 1) * k * (2 * k - 1) / 6.0
        dur_ms = max(0.5 * dur_ms, dur_ms + noise * math.sqrt(sq) * float(eng._rng.standard_normal()))
    end = eng.now + dur_ms * 1e-3
    used = 0
    done = False
    cache = eng.cache
    for r in running:
        c = r.num_computed_tokens
        r.num_computed_tokens = c + k
        used += -(-(c + k) // bs) - (-(-c // bs))
        r.num_output_tokens += k
        if cache is not None:  # the k steps take their blocks and cache the ones they fill, as steps would
            cache.grow(r, c, k)
        if r.num_output_tokens >= r.output_tokens:
            r.phase = Phase.FINISHED
            r.finish_time = end
            done = True
    eng.free_blocks = free - used
    if done:
        keep = []
        for r in running:
            if r.phase == Phase.FINISHED:
                eng._release(r, r.num_computed_tokens, final=True)
                finished.append(r)
            else:
                keep.append(r)
        eng.running = keep
    eng.now = end
    return True
