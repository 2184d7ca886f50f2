"""The load of ``blockctl bench faults``: OpenAI completions through the schedulers, each outcome classified.

Every request asks for exactly ``max_tokens`` tokens (``ignore_eos``), so a reply that ends short without an
error is caught as a silent cut. Half the requests stream. A scheduler that refuses the connection (it is
down) is skipped for the next one, as a load balancer would (nothing was sent); any other failure counts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

OUTCOMES = ("completed", "failed_before_token", "cut_with_error_event", "cut_connection_broken", "cut_silently",
            "hung")


@dataclass(slots=True)
class Outcome:
    kind: str  # one of OUTCOMES
    stream: bool
    tokens: int
    status: int | None
    detail: str = ""
    at: float = 0.0  # when it ended (a fault shows when a request ends, not when it began)
    instance: str = ""  # that answered (x-blockctl-instance), when one did
    seconds: float = 0.0  # from send to the end


@dataclass
class LoadStats:
    outcomes: list[Outcome] = field(default_factory=list)
    redirected: int = 0  # a scheduler refused the connection; sent to another one

    def counts(self) -> Counter[str]:
        return Counter(o.kind for o in self.outcomes)


def _events(text: str) -> list[str]:
    return [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]


def classify_stream(status: int, text: str, max_tokens: int, broke: str | None) -> tuple[str, int, str]:
    """(outcome, tokens, detail) of one streamed reply given its raw SSE text and a transport error."""
    if status != 200:
        return "failed_before_token", 0, f"HTTP {status}"
    tokens, error, done = 0, None, False
    for payload in _events(text):
        if payload == "[DONE]":
            done = True
            continue
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if "error" in event:
            error = str(event["error"].get("message", ""))[:120]
            continue
        for choice in event.get("choices") or ():
            if choice.get("text"):
                tokens += 1
    if error is not None:
        return ("failed_before_token" if tokens == 0 else "cut_with_error_event"), tokens, error
    if broke is not None:
        return ("failed_before_token" if tokens == 0 else "cut_connection_broken"), tokens, broke
    if done and tokens == max_tokens:
        return "completed", tokens, ""
    return "cut_silently", tokens, f"{tokens}/{max_tokens} tokens, [DONE] {'seen' if done else 'missing'}"


def classify_whole(status: int, body: bytes, max_tokens: int) -> tuple[str, int, str]:
    if status != 200:
        return "failed_before_token", 0, f"HTTP {status}"
    try:
        data = json.loads(body)
        tokens = int(data["usage"]["completion_tokens"])
    except (ValueError, KeyError, TypeError):
        return "cut_silently", 0, "unreadable 200 reply"
    return ("completed" if tokens == max_tokens else "cut_silently"), tokens, ""


class Load:
    """``concurrency`` workers sending back to back until ``stop`` is set."""

    def __init__(self, urls: list[str], *, concurrency: int, max_tokens: int, hang_s: float) -> None:
        self.urls = urls
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.hang_s = hang_s
        self.stats = LoadStats()
        self.stop = asyncio.Event()
        self.go = asyncio.Event()  # cleared: workers pause between requests (a drill needs a quiet cluster)
        self.go.set()
        self.inflight = 0
        self._next = itertools.count()

    async def pause(self) -> None:
        """Stop sending and wait until no request of the load is in flight."""
        self.go.clear()
        while self.inflight:
            await asyncio.sleep(0.05)

    def _body(self, n: int, stream: bool) -> dict[str, object]:
        return {"model": "emulated", "prompt": f"Fault drill request {n}: tell a short story.",
                "max_tokens": self.max_tokens, "ignore_eos": True, "stream": stream}

    async def run(self) -> LoadStats:
        timeout = httpx.Timeout(connect=2.0, read=None, write=10.0, pool=None)
        limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            await asyncio.gather(*(self._worker(http) for _ in range(self.concurrency)))
        return self.stats

    async def _worker(self, http: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            if not self.go.is_set():
                await self.go.wait()
            n = next(self._next)
            self.inflight += 1
            started = time.monotonic()
            stream = n % 2 == 0
            try:
                kind, tokens, status, detail, inst = await asyncio.wait_for(self._one(http, n, stream), self.hang_s)
            except asyncio.TimeoutError:
                kind, tokens, status, detail, inst = "hung", 0, None, f"no end within {self.hang_s:.0f} s", ""
            self.inflight -= 1
            now = time.monotonic()
            self.stats.outcomes.append(Outcome(kind, stream, tokens, status, detail, now, inst, now - started))

    async def _one(self, http: httpx.AsyncClient, n: int, stream: bool
                   ) -> tuple[str, int, int | None, str, str]:
        body = self._body(n, stream)
        for attempt in range(len(self.urls)):
            url = self.urls[(n + attempt) % len(self.urls)]
            status: int | None = None
            try:
                if not stream:
                    resp = await http.post(f"{url}/v1/completions", json=body)
                    kind, tokens, detail = classify_whole(resp.status_code, resp.content, self.max_tokens)
                    return kind, tokens, resp.status_code, detail, resp.headers.get("x-blockctl-instance", "")
                parts: list[bytes] = []
                broke = None
                async with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
                    status = resp.status_code
                    inst = resp.headers.get("x-blockctl-instance", "")
                    try:
                        async for chunk in resp.aiter_raw():
                            parts.append(chunk)
                    except httpx.HTTPError as exc:
                        broke = f"connection broke ({type(exc).__name__})"
                text = b"".join(parts).decode("utf-8", "replace")
                kind, tokens, detail = classify_stream(status, text, self.max_tokens, broke)
                return kind, tokens, status, detail, inst
            except httpx.ConnectError:
                self.stats.redirected += 1  # nothing was sent: this scheduler is down, try the next one
                continue
            except httpx.HTTPError as exc:
                return "failed_before_token", 0, status, f"{type(exc).__name__}", ""
        return "failed_before_token", 0, None, "every scheduler refused the connection", ""
