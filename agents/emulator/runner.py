"""Runs the engine model in real time: plan a step, sleep until it ends, complete it, fan out its tokens.

Time: engine time ``t`` is wall time ``t0 + t`` on the loop's monotonic clock. Steps follow each other on
that timeline (a step starts when the previous one ends), so the Python work done between steps (token
fan-out, HTTP writes) is hidden inside the emulated step, as vLLM overlaps CPU work with the GPU. Only when
the loop falls more than ``RESYNC_S`` behind (an overloaded machine), or after idling, does engine time
jump forward to the wall clock. Idle means no task wakes up at all until a request arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from blockctl.engine.core import Engine
from blockctl.engine.prefixcache import block_hashes
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Request, StepResult
from blockctl.errors import EngineError
from blockctl_agents.emulator.metrics import EngineGauges, EngineMetrics

RESYNC_S = 0.05
_log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Tracked:
    """One request in flight, as its HTTP handler sees it; ``wake`` is set whenever something changed."""

    req: Request
    finish_reason: str  # reported when the request runs to its end ("stop" or "length")
    salt: int  # seeds the synthetic text
    notify_tokens: bool = True  # wake on every token (streams), else only when the request ends
    produced: int = 0  # tokens ready to send
    done: bool = False  # all tokens produced
    aborted: bool = False  # removed before the end (client gone or server stopping)
    last_token_time: float = 0.0  # engine time of the newest token
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def closed(self) -> bool:
        return self.done or self.aborted


class EngineRunner:
    """Owns the Engine and the requests in flight; everything runs on the one event loop."""

    def __init__(self, config: EngineConfig, model: StepTimeModel, *, noise: float, seed: int) -> None:
        self.engine = Engine(config, model, noise=noise, seed=seed)
        self.metrics = EngineMetrics()
        self._tracked: dict[str, Tracked] = {}
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self.failure: BaseException | None = None  # set when the engine loop died (the instance is unhealthy)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._task = loop.create_task(self._run(), name="engine-loop")
        self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.failure = task.exception()
        _log.error("engine loop failed; aborting all requests", exc_info=self.failure)
        self.abort_all()

    async def stop(self) -> None:
        """Abort every request in flight and stop the engine loop."""
        self.abort_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def now(self) -> float:
        """The wall clock in engine time."""
        return asyncio.get_running_loop().time() - self._t0

    # ---- requests -----------------------------------------------------------------------------------
    def submit(
        self, req_id: str, prompt_tokens: int, output_tokens: int, finish_reason: str, salt: int,
        *, notify_tokens: bool = True, token_ids: Sequence[int] = (),
    ) -> Tracked:
        """Queue a request; EngineError when it can never fit the instance. With prefix caching on, its prompt's
        ``token_ids`` key its blocks in the cache (the reply's blocks stay private to it)."""
        if req_id in self._tracked:
            raise EngineError(f"request {req_id} is already in flight")
        if not self.engine.has_work():  # idle: bring engine time up to now before the request arrives
            self.engine.now = max(self.engine.now, self.now())
        req = Request(req_id, prompt_tokens, output_tokens, arrival_time=self.now())
        if self.engine.cache is not None:
            req.block_hashes = block_hashes(token_ids, self.engine.config.block_size)
        self.engine.add(req)
        tr = Tracked(req, finish_reason, salt, notify_tokens)
        self._tracked[req_id] = tr
        self._work.set()
        return tr

    def abort(self, tr: Tracked) -> None:
        """Remove a request (client gone); frees its KV blocks at once. No-op when it already ended."""
        if tr.closed:
            return
        self.engine.abort(tr.req.req_id)
        self._tracked.pop(tr.req.req_id, None)
        tr.aborted = True
        self.metrics.success["abort"] += 1
        tr.wake.set()

    def abort_all(self) -> None:
        for tr in list(self._tracked.values()):
            self.abort(tr)

    @property
    def in_flight(self) -> int:
        return len(self._tracked)

    def gauges(self) -> EngineGauges:
        e = self.engine
        cache = e.cache
        return EngineGauges(
            running=len(e.running), waiting=len(e.waiting), kv_usage=e.kv_usage,
            preemptions=e.num_preemptions_total, block_size=e.config.block_size,
            num_gpu_blocks=e.num_blocks_total,
            prefix_cache_queries=cache.queries if cache is not None else 0,
            prefix_cache_hits=cache.hits if cache is not None else 0,
        )

    # ---- the engine loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        engine = self.engine
        while True:
            if not engine.has_work():
                self._work.clear()
                await self._work.wait()
                continue
            wall = loop.time() - self._t0
            if wall - engine.now > RESYNC_S:
                engine.now = wall
            busy_from = time.perf_counter()
            plan = engine.schedule()
            if plan is None:  # cannot happen with work queued (every request fits an empty cache)
                raise EngineError("engine has work but scheduled nothing")
            duration = engine.step_duration(plan.shape)
            delay = self._t0 + plan.start + duration - loop.time()
            busy = time.perf_counter() - busy_from
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.metrics.late_seconds -= delay
            busy_from = time.perf_counter()
            self._fan_out(engine.complete(plan, duration))
            self.metrics.engine_cpu_seconds += busy + time.perf_counter() - busy_from

    def _fan_out(self, result: StepResult) -> None:
        end = result.start + result.duration
        m = self.metrics
        m.steps += 1
        m.step_seconds += result.duration
        m.iteration_tokens.observe(result.shape.total_tokens)
        tracked = self._tracked
        m.generation_tokens += len(result.produced)
        for r in result.produced:
            tr = tracked.get(r.req_id)
            if tr is None:
                continue
            if tr.produced == 0:
                m.prompt_tokens += r.prompt_tokens
                m.ttft.observe(end - r.arrival_time)
                if r.first_scheduled_time is not None:  # a lagging engine may plan a step "before" arrival
                    m.queue.observe(max(0.0, r.first_scheduled_time - r.arrival_time))
            else:
                m.itl.observe(end - tr.last_token_time)
            tr.produced += 1
            tr.last_token_time = end
            if tr.notify_tokens:
                tr.wake.set()
        for r in result.finished:
            tr = tracked.pop(r.req_id, None)
            if tr is None:
                continue
            tr.done = True
            tr.wake.set()
            m.e2e.observe(end - r.arrival_time)
            m.success[tr.finish_reason] += 1
