"""The online-tagging benchmark: percentile summary by hand, and an open-loop run through a fake model."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence

import pytest

from blockctl.tagger.bench import run, summarize


def test_summary_by_hand() -> None:
    s = summarize([0.001, 0.002, None, 0.003, 0.004], rate=10.0, span_s=0.5, batches=2, mean_batch=2.0)
    assert (s.requests, s.answered, s.missed_deadline) == (5, 4, 1)
    assert s.p50_ms == pytest.approx(2.5) and s.max_ms == pytest.approx(4.0)
    assert s.achieved_rate == pytest.approx(10.0)
    empty = summarize([None], rate=1.0, span_s=1.0, batches=0, mean_batch=0.0)
    assert math.isnan(empty.p50_ms) and empty.missed_deadline == 1


class FixedCost:
    def predict(self, prompts: Sequence[str]) -> list[int]:
        time.sleep(0.004)
        return [1] * len(prompts)


async def test_open_loop_run_batches_under_load() -> None:
    s = await run(FixedCost(), ["a", "b"], rate=1000.0, requests=60, max_batch=8, max_wait_ms=1, deadline_ms=5000)
    assert s.answered == 60 and s.missed_deadline == 0
    assert s.mean_batch > 1.5  # arrivals every ~1 ms against 4 ms inference: requests share batches
    assert s.p50_ms >= 4.0  # at least one inference
    # sleeping costs wall time but no CPU: the two inference timings tell a busy core from a slow model
    assert s.wall_ms_per_batch >= 4.0 > s.cpu_ms_per_batch



class ThreadedCost:
    """Burns ~4 ms of CPU per batch in another thread while the calling thread waits, as torch's threads do."""

    def predict(self, prompts: Sequence[str]) -> list[int]:
        def burn() -> None:
            end = time.thread_time() + 0.004
            while time.thread_time() < end:
                pass

        worker = threading.Thread(target=burn)
        worker.start()
        worker.join()
        return [1] * len(prompts)


async def test_process_cpu_counts_the_threads_the_inference_thread_does_not() -> None:
    s = await run(ThreadedCost(), ["a"], rate=200.0, requests=20, max_batch=4, deadline_ms=10_000)
    assert s.answered == 20
    assert s.process_cpu_ms_per_batch >= 4.0 > s.cpu_ms_per_batch  # the old figure missed the model's threads
    assert s.process_cpu_ms_per_request >= 4.0 * s.batches / s.requests
