"""Drive controlled batches through a running OpenAI-compatible engine and record every token's arrival time.

Black box: only ``/v1/models`` and ``/v1/completions`` (streaming). Each request sends its prompt as random
token ids (small ids, valid in every vocabulary; random so the engine's prefix cache cannot hit) with
``ignore_eos`` and ``max_tokens``, so prompt and output lengths are exact. What the timestamps mean and how
step times are read from them is in :mod:`blockctl_agents.profiler.endpoint_steps`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from blockctl.errors import UpstreamError
from blockctl_agents.predictor.sse import SseTokenCounter

TOKEN_ID_RANGE = (3, 30)  # inside any vocabulary (the test model has 40 words); ids 0-2 are often special


@dataclass(slots=True)
class Stream:
    """One streamed request: send time and the arrival time of each token (``time.perf_counter`` seconds)."""

    prompt_tokens: int
    max_tokens: int
    sent: float = 0.0
    tokens: list[float] = field(default_factory=list)
    done: float = 0.0
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.tokens[0] - self.sent if self.tokens else None


class EngineClient:
    """Streams completions with exact lengths; one instance per profiling run."""

    def __init__(self, base_url: str, *, api_key: str | None = None, seed: int | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, limits=limits, trust_env=False,
            timeout=httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=None),
        )
        # Fresh prompt ids every run unless a seed is given: an engine keeps a finished prompt's blocks cached,
        # and a prefill served from its cache would be timed as if computed.
        self._rng = random.Random(seed)
        self.model: str | None = None
        self.max_model_len: int | None = None

    async def __aenter__(self) -> EngineClient:
        try:
            resp = await self._http.get("/v1/models")
            resp.raise_for_status()
            data = resp.json().get("data") or [{}]
        except (httpx.HTTPError, ValueError) as exc:
            await self._http.aclose()
            raise UpstreamError(f"{self._http.base_url}/v1/models: {exc!r}", hint="is the engine up?") from None
        self.model = data[0].get("id")
        mml = data[0].get("max_model_len")
        self.max_model_len = int(mml) if isinstance(mml, int) else None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    def prompt(self, n: int) -> list[int]:
        lo, hi = TOKEN_ID_RANGE
        return [self._rng.randrange(lo, hi) for _ in range(n)]

    async def stream(self, s: Stream, *, at: float | None = None) -> Stream:
        """Send ``s`` (at ``at`` on the perf_counter clock, if given) and record its token times."""
        if at is not None:
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        body = {
            "prompt": self.prompt(s.prompt_tokens), "max_tokens": s.max_tokens, "ignore_eos": True,
            "stream": True, "temperature": 0.0, **({"model": self.model} if self.model else {}),
        }
        counter = SseTokenCounter()
        s.sent = time.perf_counter()
        try:
            async with self._http.stream("POST", "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    s.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    return s
                async for chunk in resp.aiter_raw():
                    n = counter.feed(chunk)
                    if n:
                        now = time.perf_counter()
                        s.tokens.extend([now] * n)
        except httpx.HTTPError as exc:
            s.error = type(exc).__name__
        s.done = time.perf_counter()
        if s.error is None and counter.error:
            s.error = counter.error
        return s

    async def batch(self, specs: Sequence[tuple[int, int, float]], attempts: int = 3) -> list[Stream]:
        """Run ``(prompt_tokens, max_tokens, offset_s)`` streams concurrently, each sent ``offset_s`` after
        the batch starts; returns them in the same order. A batch with a failed stream is run again (its
        shape is what is measured), up to ``attempts`` times."""
        failed: list[str] = []
        for _ in range(attempts):
            start = time.perf_counter()
            streams = [Stream(p, m) for p, m, _ in specs]
            await asyncio.gather(
                *(self.stream(s, at=start + off) for s, (_, _, off) in zip(streams, specs, strict=True))
            )
            failed = [s.error for s in streams if s.error]
            if not failed:
                return streams
        raise UpstreamError(f"{len(failed)} of {len(specs)} profiling requests failed {attempts} times: {failed[0]}")


Progress = Callable[[str], None]
