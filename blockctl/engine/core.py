"""A pure, deterministic model of vLLM V1 continuous batching: paged KV blocks, token budget, chunked
prefill, FCFS admission, preemption by recompute, and step times from a StepTimeModel.

Invariant: a running request holds exactly ``ceil(num_computed_tokens / block_size)`` blocks between steps
(while a plan is pending, also the blocks of its scheduled tokens); a waiting request holds none. With prefix
caching (``config.enable_prefix_caching``) blocks may be shared and freed blocks stay cached until evicted:
``free_blocks`` is then the length of vLLM's free queue, kept by ``cache`` (engine/prefixcache.py). Without a
cache, a request's ``prefix_hit`` stands in for what its first admission would find (the what-if's view).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from blockctl.engine.prefixcache import PrefixCache
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Phase, Request, StepResult, StepShape
from blockctl.errors import ConfigError, EngineError


def validate_config(config: EngineConfig) -> None:
    for key in ("block_size", "num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens", "max_model_len"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"must be a positive integer, got {value!r}", key=key)


@dataclass(slots=True)
class StepPlan:
    """What ``schedule`` decided: ``tokens[i]`` new tokens of ``reqs[i]`` this step (blocks already taken)."""

    start: float
    reqs: list[Request] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    shape: StepShape = field(default_factory=StepShape)


class Engine:
    """One engine instance: ``step()`` runs one step exactly; ``run_until`` fast-forwards."""

    __slots__ = (
        "_bs", "_noise", "_pending", "_rng", "cache", "config", "fast_forward", "free_blocks", "model", "now",
        "num_blocks_total", "num_preemptions_total", "running", "waiting",
    )

    def __init__(
        self,
        config: EngineConfig,
        model: StepTimeModel,
        *,
        now: float = 0.0,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        validate_config(config)
        if not (noise >= 0 and math.isfinite(noise)):
            raise ConfigError(f"must be a finite number >= 0, got {noise!r}", key="noise")
        self.config = config
        self.model = model
        self.now = float(now)
        self.running: list[Request] = []  # admission order
        self.waiting: deque[Request] = deque()  # FCFS; preempted requests go back to the head
        self.num_blocks_total = config.num_gpu_blocks
        self.free_blocks = config.num_gpu_blocks
        self.cache = PrefixCache(config.num_gpu_blocks, config.block_size) if config.enable_prefix_caching else None
        self.num_preemptions_total = 0
        self.fast_forward = True  # run_until may jump pure-decode stretches in closed form
        self._bs = config.block_size
        self._noise = float(noise)
        self._rng = np.random.default_rng(seed)
        self._pending: StepPlan | None = None

    # ---- observable state -------------------------------------------------------------------------
    @property
    def kv_usage(self) -> float:
        return 1.0 - self.free_blocks / self.num_blocks_total

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self._bs)

    # ---- requests in and out ----------------------------------------------------------------------
    def _check_fits(self, req: Request) -> None:
        cfg = self.config
        if req.prompt_tokens < 1 or req.output_tokens < 1:
            raise EngineError(f"request {req.req_id}: prompt_tokens and output_tokens must be >= 1")
        total = req.prompt_tokens + req.output_tokens
        if total > cfg.max_model_len:
            raise EngineError(
                f"request {req.req_id}: prompt ({req.prompt_tokens}) + output ({req.output_tokens}) tokens "
                f"exceed max_model_len {cfg.max_model_len}"
            )
        if self.blocks_for(total - 1) > self.num_blocks_total:
            raise EngineError(
                f"request {req.req_id}: needs {self.blocks_for(total - 1)} KV blocks, the cache has "
                f"{self.num_blocks_total}"
            )

    def add(self, req: Request) -> None:
        """A new request joins the tail of the waiting queue (its progress fields are reset)."""
        self._check_fits(req)
        req.num_computed_tokens = 0
        req.num_output_tokens = 0
        req.first_token_time = req.finish_time = req.first_scheduled_time = None
        req.num_preemptions = 0
        req.phase = Phase.WAITING
        self.waiting.append(req)

    def restore(self, req: Request) -> None:
        """Insert a request already in progress (to rebuild an instance's state); call in admission order.

        A request with computed tokens (or phase RUNNING) joins ``running`` and takes its blocks; when they do
        not fit, it is restored as preempted (computed tokens dropped, appended to the waiting queue), as
        vLLM would have done. Otherwise it joins the waiting queue with its produced tokens kept.
        """
        self._check_fits(req)
        produced, computed = req.num_output_tokens, req.num_computed_tokens
        if produced >= req.output_tokens:
            raise EngineError(
                f"request {req.req_id}: already produced {produced} of {req.output_tokens} tokens"
            )
        if produced < 0 or computed < 0 or computed > req.prompt_tokens + produced:
            raise EngineError(f"request {req.req_id}: inconsistent progress (computed {computed}, "
                              f"produced {produced}, prompt {req.prompt_tokens})")
        if (computed > 0 or req.phase == Phase.RUNNING) and len(self.running) < self.config.max_num_seqs:
            need = self.blocks_for(computed)
            if need <= self.free_blocks:
                self.free_blocks -= need
                if self.cache is not None:
                    self.cache.grow(req, 0, computed)
                req.phase = Phase.RUNNING
                self.running.append(req)
                return
        req.num_computed_tokens = 0
        req.phase = Phase.WAITING
        self.waiting.append(req)

    def abort(self, req_id: str) -> Request | None:
        """Remove a request wherever it is and free its blocks; None when the engine does not hold it."""
        for i, r in enumerate(self.running):
            if r.req_id == req_id:
                del self.running[i]
                held = r.num_computed_tokens
                if self._pending is not None:
                    for pr, n in zip(self._pending.reqs, self._pending.tokens, strict=True):
                        if pr is r:
                            held += n
                self._release(r, held, final=True)
                r.phase = Phase.FINISHED
                return r
        for i, r in enumerate(self.waiting):
            if r.req_id == req_id:
                del self.waiting[i]
                if self.cache is not None:
                    self.cache.forget(r)
                r.phase = Phase.FINISHED
                return r
        return None

    def _release(self, r: Request, held_tokens: int, *, final: bool) -> None:
        """``r`` frees the blocks of its ``held_tokens`` (a final release also forgets it in the cache)."""
        cache = self.cache
        if cache is None:
            self.free_blocks += -(-held_tokens // self._bs)
            return
        cache.release(r, -(-held_tokens // self._bs))
        if final:
            cache.forget(r)
        self.free_blocks = cache.free

    def admission_blocks(self, r: Request, budget: int) -> int:
        """Free blocks that admitting waiting ``r`` with ``budget`` tokens left would take (as ``schedule``)."""
        total = r.prompt_tokens + r.num_output_tokens
        bs = self._bs
        if self.cache is not None:
            hit_blocks, evictable = self.cache.lookup(r)
            hit = len(hit_blocks) * bs
            return -(-(hit + min(total - hit, budget)) // bs) - len(hit_blocks) + evictable
        hit = min(r.prefix_hit, total - 1) if r.prefix_hit > 0 and r.num_preemptions == 0 else 0
        return -(-(hit + min(total - hit, budget)) // bs)

    def _preempt_last(self) -> Request:
        victim = self.running.pop()
        self._release(victim, victim.num_computed_tokens, final=False)
        victim.num_computed_tokens = 0
        victim.num_preemptions += 1
        victim.phase = Phase.WAITING
        self.waiting.appendleft(victim)
        self.num_preemptions_total += 1
        return victim

    # ---- one step ---------------------------------------------------------------------------------
    def schedule(self) -> StepPlan | None:
        """First half of a step: decide what runs and take its blocks. None when there is nothing to run."""
        if self._pending is not None:
            raise EngineError("schedule() called twice without complete()")
        cfg, bs = self.config, self._bs
        plan = StepPlan(start=self.now)
        reqs, tokens, preempted = plan.reqs, plan.tokens, plan.preempted
        budget = cfg.max_num_batched_tokens
        running = self.running
        free = self.free_blocks
        cache = self.cache
        pt = ps = pc = db = dc = 0  # the step's shape, summed as requests are scheduled
        attn = 0.0
        for r in running:  # preemption pops from the end: the iteration stops at the new end
            if budget <= 0:
                break
            c = r.num_computed_tokens
            o = r.num_output_tokens
            n = r.prompt_tokens + o - c
            decode = n == 1 and o > 0
            if n > budget:
                n = budget
            new_blocks = (1 if c % bs == 0 else 0) if decode else -(-(c + n) // bs) + (c // -bs)
            if new_blocks > free:
                self.free_blocks = free
                while new_blocks > self.free_blocks:
                    victim = self._preempt_last()
                    preempted.append(victim)
                    if victim is r:
                        break
                free = self.free_blocks
                if r.phase != Phase.RUNNING:  # r preempted itself: nothing more runs this step
                    break
            free -= new_blocks
            if cache is not None and (new_blocks or (c + n) // bs != c // bs):  # blocks taken or filled
                cache.grow(r, c, n)
            reqs.append(r)
            tokens.append(n)
            budget -= n
            if decode:
                db += 1
                dc += c
            else:
                pt += n
                ps += 1
                pc += c
                attn += n * (c + (n + 1) * 0.5)
        if not preempted:
            waiting = self.waiting
            max_seqs = cfg.max_num_seqs
            while waiting and budget > 0 and len(running) < max_seqs:
                r = waiting[0]
                total = r.prompt_tokens + r.num_output_tokens
                if cache is not None:
                    hit_blocks, evictable = cache.lookup(r)
                    hit = len(hit_blocks) * bs
                    n = total - hit
                    if n > budget:
                        n = budget
                    new_blocks = -(-(hit + n) // bs) - len(hit_blocks) + evictable
                else:
                    hit = r.prefix_hit if r.prefix_hit > 0 and r.num_preemptions == 0 else 0
                    if hit >= total:
                        hit = total - 1  # the last token is always computed
                    n = total - hit
                    if n > budget:
                        n = budget
                    new_blocks = -(-(hit + n) // bs)  # hit blocks counted as taken from the free queue
                if new_blocks > free:
                    break
                waiting.popleft()
                r.phase = Phase.RUNNING
                running.append(r)
                free -= new_blocks
                if cache is not None:
                    cache.admit(r, hit_blocks, n)
                r.num_computed_tokens = hit
                reqs.append(r)
                tokens.append(n)
                budget -= n
                pt += n
                ps += 1
                pc += hit
                attn += n * (hit + (n + 1) * 0.5)
        self.free_blocks = free
        if not reqs and not preempted:
            return None
        plan.shape = StepShape(prefill_tokens=pt, prefill_seqs=ps, prefill_attn=attn, decode_batch=db,
                               decode_context=dc, prefill_cached=pc)
        self._pending = plan
        return plan

    def step_duration(self, shape: StepShape) -> float:
        """Seconds of one step of this shape, with the engine's noise drawn."""
        d = self.model.step_seconds(shape)
        if self._noise:
            d *= max(0.5, 1.0 + self._noise * float(self._rng.standard_normal()))
        return d

    def complete(self, plan: StepPlan, duration: float | None = None) -> StepResult:
        """Second half of a step: the scheduled tokens are computed ``duration`` seconds after the plan's
        start (the model's time, with noise, by default). Requests aborted in between are skipped."""
        if plan is not self._pending:
            raise EngineError("complete() needs the plan returned by the last schedule()")
        self._pending = None
        d = self.step_duration(plan.shape) if duration is None else duration
        end = max(self.now, plan.start + d)
        result = StepResult(start=plan.start, duration=end - plan.start, shape=plan.shape,
                            preempted=plan.preempted)
        produced, finished = result.produced, result.finished
        running_phase, start = Phase.RUNNING, plan.start
        for r, n in zip(plan.reqs, plan.tokens, strict=True):
            if r.phase != running_phase:
                continue
            if r.first_scheduled_time is None:
                r.first_scheduled_time = start
            c = r.num_computed_tokens = r.num_computed_tokens + n
            o = r.num_output_tokens
            if c == r.prompt_tokens + o:
                r.num_output_tokens = o = o + 1
                produced.append(r)
                if r.first_token_time is None:
                    r.first_token_time = end
                if o >= r.output_tokens:
                    r.phase = Phase.FINISHED
                    r.finish_time = end
                    self._release(r, c, final=True)
                    finished.append(r)
        if finished:
            self.running = [r for r in self.running if r.phase == Phase.RUNNING]
        self.now = end
        return result

    def step(self) -> StepResult | None:
        """Run one step exactly; None when idle."""
        plan = self.schedule()
        return None if plan is None else self.complete(plan)

    # ---- fast-forward -----------------------------------------------------------------------------
    def run_until(self, t: float) -> list[Request]:
        """Run every step that starts before ``t``; returns the requests that finished. An idle engine's clock
        moves to ``t`` (unless ``t`` is infinite: ``run_until(math.inf)`` runs everything to completion)."""
        from blockctl.engine.fastforward import advance

        finished: list[Request] = []
        advance(self, t, None, finished)
        if not self.has_work() and self.now < t < math.inf:
            self.now = t
        return finished

    def run_until_finished(self, req: Request) -> list[Request]:
        """Run until ``req`` finishes (or leaves the engine); returns every request that finished."""
        from blockctl.engine.fastforward import advance

        finished: list[Request] = []
        advance(self, math.inf, req, finished)
        return finished

