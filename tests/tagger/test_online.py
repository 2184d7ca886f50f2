"""Online micro-batching: batches form under concurrency, deadlines return None, failures do not leak."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from blockctl.tagger.online import DAEMON_THREADS, OnlineTagger


class SlowLength:
    """Predicts len(prompt) after sleeping; records each batch and the thread it ran on."""

    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.seconds, self.fail = seconds, fail
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()

    def predict(self, prompts: Sequence[str]) -> list[int]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(prompts))
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("model exploded")
        return [len(p) for p in prompts]


async def test_concurrent_requests_share_batches_off_the_loop() -> None:
    model = SlowLength(0.05)
    tagger = OnlineTagger(model, max_batch=8, max_wait_ms=5, deadline_ms=10_000)
    try:
        prompts = ["x" * i for i in range(1, 21)]
        results = await asyncio.gather(*(tagger.predict(p) for p in prompts))
    finally:
        await tagger.close()
    assert results == list(range(1, 21))  # each caller gets its own prompt's answer
    assert all(len(b) <= 8 for b in model.batches)
    assert len(model.batches) <= 4  # 20 prompts in batches of up to 8, not 20 calls
    assert threading.get_ident() not in model.threads  # never on the event loop's thread
    assert tagger.stats.batched_prompts == 20 and tagger.stats.answered == 20
    assert tagger.stats.mean_batch >= 5


async def test_missed_deadline_returns_none_and_stale_prompts_are_skipped() -> None:
    model = SlowLength(0.3)
    tagger = OnlineTagger(model, max_batch=1, max_wait_ms=0, deadline_ms=60)
    try:
        t0 = time.perf_counter()
        first, second = await asyncio.gather(tagger.predict("aaa"), tagger.predict("bb"))
        waited = time.perf_counter() - t0
        assert (first, second) == (None, None)
        assert waited < 0.25  # returned at the deadline, not after the 0.3 s inference
        await asyncio.sleep(0.4)  # let the first batch finish; the second prompt has expired meanwhile
        assert tagger.stats.missed_deadline == 2
        assert tagger.stats.dropped_stale == 1 and len(model.batches) == 1
    finally:
        await tagger.close()


async def test_model_failure_gives_none_and_the_batcher_survives() -> None:
    model = SlowLength(0.0, fail=True)
    tagger = OnlineTagger(model, deadline_ms=5_000)
    try:
        assert await tagger.predict("hello") is None
        model.fail = False
        assert await tagger.predict("hello") == 5
        assert tagger.stats.errors == 1
    finally:
        await tagger.close()


async def test_an_idle_batcher_starts_at_once_unless_told_to_wait() -> None:
    async def lone_request(tagger: OnlineTagger) -> float:
        await tagger.start()
        t0 = time.perf_counter()
        try:
            assert await tagger.predict("abc") == 3
        finally:
            await tagger.close()
        return time.perf_counter() - t0

    at_once = await lone_request(OnlineTagger(SlowLength(0.0), deadline_ms=10_000))
    waiting = await lone_request(OnlineTagger(SlowLength(0.0), max_wait_ms=300, deadline_ms=10_000))
    assert at_once < 0.3 <= waiting


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        OnlineTagger(SlowLength(), max_batch=0)


async def test_real_tagger_online(tiny_tagger: Path) -> None:
    from blockctl.tagger.predict import Tagger

    offline = Tagger(tiny_tagger).predict(["brief w1 w2", "detailed w3 w4 essay"])
    tagger = OnlineTagger(tiny_tagger, deadline_ms=60_000)  # generous: includes loading the model
    try:
        await tagger.start()
        got = await asyncio.gather(tagger.predict("brief w1 w2"), tagger.predict("detailed w3 w4 essay"))
    finally:
        await tagger.close()
    assert list(got) == offline
    assert tagger.stats.forward == "lean"  # a BERT tagger is served through the verified lean forward
    assert tagger.stats.threads == DAEMON_THREADS  # pinned in the inference thread, as the daemon runs it


def test_bad_directory_fails_at_construction(tmp_path: Path) -> None:
    from blockctl.errors import TaggerError

    with pytest.raises(TaggerError, match="tagger directory"):
        OnlineTagger(tmp_path)
