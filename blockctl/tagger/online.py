"""Online tagging on the caller's event loop: micro-batches prompts, runs the model in one worker thread.

``await tagger.predict(text)`` returns predicted output tokens, or None when ``deadline_ms`` passes first
(the caller then routes with its fallback length instead of waiting). ``await tagger.predict_length(text)``
also returns the calibrated length distribution of the prompt's bin (its atoms; None for a tagger saved
without calibration), which the scheduler passes on to the agents. Inference never runs on the loop:
batches go to a single-thread executor, because torch blocks. While one batch runs, new prompts queue
and form the next batch (up to ``max_batch``). An idle worker starts at once by default: waiting
``max_wait_ms`` for company adds that wait to every request at low load, and at high load batches form
anyway behind the running one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from blockctl.predict.history import ReplyHistory
from blockctl.tagger.calibration import Calibration
from blockctl.tagger.config import read_config, require_runtime

# torch CPU threads of the scheduler daemon's tagger (torch's default is one per core): the daemon's event loop
# needs a core of its own, and `bench tagger` times the tagger with this same setting.
DAEMON_THREADS = 1


class BatchPredictor(Protocol):
    def predict(self, prompts: Sequence[str]) -> list[int]: ...


@dataclass(slots=True)
class OnlineStats:
    requests: int = 0
    answered: int = 0
    missed_deadline: int = 0  # returned None: not answered in time
    dropped_stale: int = 0  # expired while queued, never run through the model
    batches: int = 0
    batched_prompts: int = 0
    errors: int = 0  # batches whose inference raised (their callers got None)
    inference_cpu_s: float = 0.0  # CPU time of the inference thread (not torch's other threads)
    inference_wall_s: float = 0.0
    forward: str = ""  # how a tagger directory computes: "lean" or "module" (lean.verified decides)
    threads: int = 0  # torch intra-op threads of the inference thread (OpenMP's setting is per thread)

    @property
    def mean_batch(self) -> float:
        return self.batched_prompts / self.batches if self.batches else 0.0


class OnlineTagger:
    """Micro-batching wrapper around a tagger directory (or any ``BatchPredictor``, e.g. in tests).

    The constructor only checks the directory and that torch is installed (TaggerError otherwise).
    ``await start()`` loads and warms the model in the worker thread; without it the first ``predict``
    starts loading and the requests during the load get None. ``await close()`` stops the batching task
    and the thread. Use from one event loop. ``lean=False`` serves a tagger directory through the
    Hugging Face module instead of the verified lean forward (``blockctl bench tagger --module``).
    """

    def __init__(
        self,
        model: str | Path | BatchPredictor,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 0.0,
        deadline_ms: float = 50.0,
        threads: int | None = DAEMON_THREADS,
        lean: bool = True,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0 or deadline_ms <= 0:
            raise ValueError("max_batch >= 1, max_wait_ms >= 0 and deadline_ms > 0 are required")
        # A directory's calibration maps the model's raw answer to a mean and a distribution; the batches then
        # ask the model for raw answers.
        self.calibration: Calibration | None = None
        self.history: ReplyHistory | None = None  # a conversation's earlier replies → its next reply's length
        if isinstance(model, (str, Path)):  # fail at startup, not silently on the first request
            config = read_config(model)
            self.calibration = Calibration.from_dict(config.calibration)
            self.history = ReplyHistory.from_dict(config.history)
            require_runtime()
        self._source = model
        self._predictor: BatchPredictor | None = None if isinstance(model, (str, Path)) else model
        self.max_batch, self.max_wait_s, self.deadline_s = max_batch, max_wait_ms / 1e3, deadline_ms / 1e3
        self._threads, self._lean = threads, lean
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blockctl-tagger")
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[int]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._loading: asyncio.Future[None] | None = None
        self.stats = OnlineStats()

    def _load(self) -> BatchPredictor:
        from blockctl.tagger.predict import Tagger

        assert isinstance(self._source, (str, Path))
        tagger = Tagger(self._source, threads=self._threads, lean=self._lean)
        tagger.predict(["warm-up"])  # the first call through torch is slow; pay it before serving
        self.stats.forward = tagger.path
        import torch  # loaded by Tagger; asked here, in the thread that runs inference

        self.stats.threads = torch.get_num_threads()
        return tagger

    async def start(self) -> None:
        """Load the model (off the loop) and start the batching task; idempotent."""
        if self._predictor is None:
            if self._loading is None:
                loop = asyncio.get_running_loop()
                self._loading = asyncio.ensure_future(self._load_async(loop))
            await asyncio.shield(self._loading)
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="blockctl-tagger-batcher")

    async def _load_async(self, loop: asyncio.AbstractEventLoop) -> None:
        self._predictor = await loop.run_in_executor(self._executor, self._load)

    async def predict(self, prompt_text: str) -> int | None:
        """Predicted output tokens, or None if not answered within ``deadline_ms`` (load time included)."""
        raw = await self._ask(prompt_text)
        if raw is None or self.calibration is None:
            return raw
        return self.calibration(raw)

    async def predict_length(self, prompt_text: str) -> tuple[int, tuple[int, ...] | None] | None:
        """(predicted output tokens, the calibrated distribution's atoms or None), or None like ``predict``."""
        raw = await self._ask(prompt_text)
        if raw is None:
            return None
        if self.calibration is None:
            return raw, None
        return self.calibration(raw), self.calibration.atoms(raw)

    async def _ask(self, prompt_text: str) -> int | None:
        """The model's answer (raw when there is a calibration), or None past the deadline or on failure."""
        self.stats.requests += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        fut: asyncio.Future[int] = loop.create_future()
        try:
            if self._worker is None:
                async with asyncio.timeout(self.deadline_s):
                    await self.start()
            self._queue.put_nowait((prompt_text, fut))
            async with asyncio.timeout_at(deadline):
                result = await asyncio.shield(fut)
        except TimeoutError:
            fut.cancel()  # the batcher skips it if it has not run yet
            self.stats.missed_deadline += 1
            return None
        except Exception:  # the model failed on this batch (counted in stats.errors)
            return None
        self.stats.answered += 1
        return result

    async def _next_batch(self) -> list[tuple[str, asyncio.Future[int]]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        until = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if self._queue.empty():
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await self._queue.get())
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        predictor = self._predictor
        assert predictor is not None
        while True:
            batch = await self._next_batch()
            live = [(p, f) for p, f in batch if not f.done()]
            self.stats.dropped_stale += len(batch) - len(live)
            if not live:
                continue
            self.stats.batches += 1
            self.stats.batched_prompts += len(live)
            try:
                preds = await loop.run_in_executor(self._executor, self._timed, predictor, [p for p, _ in live])
            except Exception as exc:  # a failing model must not take routing down with it
                self.stats.errors += 1
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                        f.exception()  # retrieved here: the waiting caller maps it to None
                continue
            for (_, f), n in zip(live, preds, strict=True):
                if not f.done():
                    f.set_result(int(n))

    def _timed(self, predictor: BatchPredictor, prompts: list[str]) -> list[int]:
        """Runs in the worker thread; CPU time separates the model's cost from waiting for a busy core."""
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            if self.calibration is not None:  # a directory's Tagger: raw answers, calibrated by the caller
                return predictor.predict(prompts, calibrated=False)  # type: ignore[call-arg]
            return predictor.predict(prompts)
        finally:
            self.stats.inference_cpu_s += time.thread_time() - cpu
            self.stats.inference_wall_s += time.perf_counter() - wall

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)
