"""The most any router could get: a workload's throughput ceiling on N instances of one engine setting.

A router decides only where each request runs; the engines' seats, KV blocks and step times decide how fast
they run. This computes, from the workload's requests and the step-time model alone, a request rate that no
routing can sustain (`blockctl bench bound`), so a capacity figure can be read against the room that was left:

- **Time.** An instance's mean step lasts at least the decode-only step of its mean batch ``B`` (the model is
  convex in the batch), plus what the linear layers add for the mean prefill tokens per step (convex in the
  tokens too; attention and the rest only add), counting only the prefill work no cache can spare: the tokens
  of each prompt that no earlier request of the workload had (its last token always computed). Each step gives
  each of the ``B`` sequences one token, so ``B`` follows by Little's law from the rate and the mean output
  length.
- **Seats.** ``B <= max_num_seqs``.
- **KV blocks.** A request holds its blocks at least while it decodes (``output`` steps). Its generated
  tokens' blocks are its own; its prompt's full blocks can be shared. However routing places requests, a
  block is held once at best while any running request needs it: with Poisson arrivals the requests holding
  block ``h`` are Poisson with mean ``Λ_h`` (rate × holding time), so it is present with probability
  ``1 - exp(-Λ_h)`` — all its holders on one instance, which no router beats. The expected blocks in use must
  fit the cluster's ``N × num_gpu_blocks``.

Everything left out makes the ceiling higher, never lower: time spent waiting or prefilling, prompts evicted
and computed again, preemption, instances out of balance, steps whose batch varies. Where a workload's requests
holding a block never overlap (turns of one conversation), ``1 - exp(-Λ)`` undercounts their ``Λ`` and the
ceiling errs high too. It is a ceiling of the *engine model* (the simulator's engines), in requests per second
of the sample's mix; a finite window of a run may complete a shorter mix a little faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from blockctl.bench.workloads.types import WorkItem
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, StepShape
from blockctl.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Shapes:
    """What the ceiling needs of a workload, per request on average (and per shareable block)."""

    requests: int
    output: float  # mean output tokens
    context: float  # mean context of a decoding sequence, over its decode steps (tokens)
    private_block_steps: float  # mean over requests of sum over decode steps of the blocks only it holds
    unseen_tokens: float  # mean prompt tokens no earlier request had (the least any cache leaves to compute)
    prompt: float  # mean prompt tokens
    shared_weights: np.ndarray  # per distinct prompt block: the sum of the output lengths of requests holding it

    @property
    def best_hit_rate(self) -> float:
        """Share of prompt tokens an unbounded cache could serve (its hit rate with every block kept)."""
        return 1.0 - self.unseen_tokens / self.prompt if self.prompt else 0.0


def _ceil_sum(m: int, bs: int) -> int:
    """sum of ceil(k / bs) for k = 1 .. m."""
    q, r = divmod(m, bs)
    return bs * q * (q + 1) // 2 + r * (q + 1)


def shapes(items: Sequence[WorkItem], hashes: Sequence[Sequence[int] | None] | None, block_size: int) -> Shapes:
    """The workload's shapes, in its order (which is arrival order: "earlier" above). ``hashes``: each item's
    block hashes over its token ids (prompt, and reply when known), as the simulator's ``prepare`` gives them;
    None (the engines cache nothing) or an item's None: nothing is shared, every prompt token computed."""
    if not items:
        raise ConfigError("the workload has no requests", key="--workload")
    bs = block_size
    weights: dict[int, float] = {}
    seen: set[int] = set()
    out = ctx = private = unseen = prompt = 0.0
    for i, it in enumerate(items):
        p, o = it.prompt_tokens, it.output_tokens
        out += o
        prompt += p
        ctx += o * p + o * (o + 1) / 2
        full = p // bs
        # the blocks beyond the prompt's full ones: its partial last block and the generated tokens'
        private += _ceil_sum(p + o, bs) - _ceil_sum(p, bs) - o * full
        chain = None if hashes is None else hashes[i]
        if chain is None:
            private += o * full
            unseen += p
            continue
        prompt_chain = chain[:full]  # chained hashes: a prefix's are the first ones of the whole
        hit = 0
        while hit < min(len(prompt_chain), (p - 1) // bs) and prompt_chain[hit] in seen:
            hit += 1
        unseen += p - hit * bs
        for h in prompt_chain:
            weights[h] = weights.get(h, 0.0) + o
        seen.update(chain)  # prompt and reply blocks: what an unbounded cache would keep
    n = len(items)
    return Shapes(n, out / n, ctx / max(out, 1.0), private / n, unseen / n, prompt / n,
                  np.fromiter(weights.values(), dtype=float, count=len(weights)))


@dataclass(frozen=True, slots=True)
class Bound:
    """The ceiling and the state of each instance there."""

    requests_per_s: float  # the whole cluster
    output_tokens_per_s: float
    batch: float  # mean decoding sequences per instance
    step_ms: float  # mean step there
    kv_blocks_used: float  # mean KV blocks held per instance (at best sharing)
    prefill_share: float  # of each instance's time, on the unseen prompt tokens
    limit: str  # what binds: "kv blocks" | "seats" | "time"
    best_hit_rate: float  # an unbounded cache's hit rate on the workload


def _whole(f: Callable[[int], float], x: float) -> float:
    """``f`` (a function of a whole number of tokens or sequences) at a mean ``x``: on the line joining its
    values at the whole numbers around it. Steps run whole numbers, and the mean of a convex function's values at
    whole numbers is at least that line's value at their mean."""
    lo = max(1, math.floor(x))
    a, b = f(lo), f(lo + 1)
    return a + (b - a) * max(0.0, x - lo)


def ceiling(sh: Shapes, config: EngineConfig, model: StepTimeModel, instances: int) -> Bound:
    """The highest request rate the cluster could sustain (module docstring), by bisection."""
    seats, blocks, budget = config.max_num_seqs, config.num_gpu_blocks, config.max_num_batched_tokens

    def decode(b: int) -> float:
        return model.step_seconds(StepShape(decode_batch=b, decode_context=round(b * sh.context)))

    def linear(n: int) -> float:
        return model.linear_ms(n) * 1e-3

    def state(rate: float) -> tuple[float, float, float, float] | None:
        """(batch, step s, KV blocks, prefill share) per instance at ``rate``; None when the steps cannot keep
        up (the step grows without end, or its tokens pass the step's budget)."""
        per = rate / instances
        step = decode(1)
        for _ in range(200):
            batch = per * sh.output * step
            tokens = per * sh.unseen_tokens * step  # prefill tokens per step
            if batch + tokens > budget:
                return None
            prefill = _whole(linear, batch + tokens) - _whole(linear, batch)
            new = _whole(decode, batch) + prefill
            if new > 60.0:
                return None
            if abs(new - step) <= 1e-9 * new:
                break
            step = new
        else:
            return None
        shared = float(np.sum(-np.expm1(-rate / sh.requests * step * sh.shared_weights)))  # the cluster's
        held = per * step * sh.private_block_steps + shared / instances
        return batch, step, held, prefill / step

    def fits(rate: float) -> bool:
        s = state(rate)
        return s is not None and s[0] <= seats and s[2] <= blocks

    lo, hi = 0.0, 1.0
    while fits(hi):
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    at = state(lo) or (0.0, 0.0, 0.0, 0.0)
    above = state(hi)
    limit = "time" if above is None else "seats" if above[0] > seats else "kv blocks"
    return Bound(lo, lo * sh.output, at[0], at[1] * 1e3, at[2], at[3], limit, sh.best_hit_rate)
