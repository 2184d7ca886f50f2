"""Open-loop (or fixed-concurrency) async load generator for any OpenAI-compatible endpoint, streaming.

Requests are dispatched on the arrival schedule whether or not earlier ones have finished (one task per
request; one ``httpx.AsyncClient`` without a connection cap, so the client never queues them). How late
each was actually sent is recorded (``sent_s - scheduled_s``), so a saturated generator shows up in the
results instead of silently bending the arrival process. Every request yields a record, failures included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from blockctl.bench.metrics import RequestRecord, RequestSlo
from blockctl.bench.results import RunResult
from blockctl.bench.wire import (
    APIS,
    LoadSpec,
    StreamState,
    base_url,
    error_message,
    feed,
    prompt_text,
    request_body,
    request_headers,
)
from blockctl.bench.workloads import ArrivalSpec, WorkItem, arrival_times
from blockctl.errors import UpstreamError

INTERRUPTED = "interrupted"  # error of requests cut off when the run is cancelled (Ctrl-C)
NOT_SENT = "not sent: interrupted"  # error of requests whose send time never came

__all__ = [
    "APIS",
    "INTERRUPTED",
    "NOT_SENT",
    "LoadSpec",
    "first_model",
    "make_client",
    "run_live",
    "run_load",
    "send_one",
    "send_schedule",
]


def _header_float(resp: httpx.Response, name: str, scale: float = 1.0) -> float | None:
    try:
        return float(resp.headers[name]) * scale
    except (KeyError, ValueError):
        return None


async def send_one(
    client: httpx.AsyncClient,
    spec: LoadSpec,
    item: WorkItem,
    index: int,
    scheduled_s: float,
    t0: float,
    body: dict[str, Any] | None = None,
) -> RequestRecord:
    """Send one request now and follow its stream to the end; never raises for a failed request."""
    body = body or request_body(item, prompt_text(item, index, spec), spec)
    path = "/v1/chat/completions" if spec.api == "chat" else "/v1/completions"
    state = StreamState(token_times=[])
    fields: dict[str, Any] = {}
    sent = time.perf_counter()
    try:
        async with client.stream(
            "POST", base_url(spec.endpoint) + path, json=body, headers=request_headers(item, spec)
        ) as resp:
            fields["instance"] = resp.headers.get("x-blockctl-instance")
            fields["predicted_e2e_s"] = _header_float(resp, "x-blockctl-predicted-e2e-ms", 1e-3)
            hint = _header_float(resp, "x-blockctl-predicted-output-tokens")
            fields["predicted_output_tokens"] = None if hint is None else int(hint)
            if resp.status_code >= 400:
                state.error = error_message(resp.status_code, await resp.aread())
            elif resp.headers.get("content-type", "").startswith("application/json"):
                # a server that ignores stream=true: the whole answer arrives at once (TTFT = E2E)
                feed(state, (await resp.aread()).decode("utf-8", "replace"), time.perf_counter())
            else:
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        feed(state, line[5:].strip(), time.perf_counter())
                        if state.done or state.error:
                            break
                short = state.text_chunks < item.output_tokens and state.usage_completion is None
                if not (state.done or state.error) and short:
                    state.error = "stream ended early (no [DONE], fewer tokens than max_tokens)"
    except httpx.HTTPError as exc:
        state.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except asyncio.CancelledError:  # the run was interrupted: keep what this request got so far
        state.error = INTERRUPTED
    end = time.perf_counter()
    times = state.token_times
    received = state.usage_completion if state.usage_completion is not None else state.text_chunks
    if state.error is None and not times:
        state.error = "no tokens in the response"
    return RequestRecord(
        index=index,
        prompt_tokens=state.usage_prompt if state.usage_prompt is not None else item.prompt_tokens,
        output_tokens=int(received),
        expected_output_tokens=item.output_tokens,
        scheduled_s=scheduled_s,
        sent_s=sent - t0,
        ttft_s=times[0] - sent if times else None,
        e2e_s=(times[-1] if times and state.error is None else end) - sent,
        itl_s=tuple(b - a for a, b in itertools.pairwise(times)),
        error=state.error,
        **fields,
    )


def make_client(spec: LoadSpec) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(spec.request_timeout_s, connect=10.0)
    return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)


async def first_model(client: httpx.AsyncClient, endpoint: str, api_key: str | None = None) -> str:
    """The first model id the endpoint lists (GET /v1/models); UpstreamError when it cannot be asked."""
    url = base_url(endpoint) + "/v1/models"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot connect: {exc}", url=url, hint="check --endpoint, or pass --model") from None
    try:
        resp.raise_for_status()
        return str(resp.json()["data"][0]["id"])
    except (httpx.HTTPStatusError, ValueError, KeyError, IndexError, TypeError):
        raise UpstreamError(f"no model listed (HTTP {resp.status_code})", url=url, hint="pass --model") from None


async def run_load(
    items: Sequence[WorkItem],
    send_times: Sequence[float],
    spec: LoadSpec,
    *,
    on_done: Callable[[RequestRecord], None] | None = None,
    client: httpx.AsyncClient | None = None,
) -> list[RequestRecord]:
    """Send ``items[i]`` at ``send_times[i]`` seconds from now (or closed-loop); one record per item, in order.

    Cancelling the run (Ctrl-C under ``asyncio.run``) is not an error: requests in flight end with error
    INTERRUPTED, those not yet sent with NOT_SENT, and the records are returned all the same.
    """
    own = client is None
    http = client or make_client(spec)
    records: list[RequestRecord | None] = [None] * len(items)
    # Bodies first: synthesising and counting prompts must not delay dispatch once the clock runs.
    bodies = [request_body(item, prompt_text(item, i, spec), spec) for i, item in enumerate(items)]
    t0 = time.perf_counter()

    async def one(i: int, scheduled: float) -> None:
        rec = await send_one(http, spec, items[i], i, scheduled, t0, bodies[i])
        records[i] = rec
        if on_done is not None:
            on_done(rec)
        if rec.error == INTERRUPTED:  # send_one kept the record; now let the cancellation go on
            raise asyncio.CancelledError

    try:
        if spec.concurrency:
            await _closed_loop(one, len(items), spec.concurrency, t0)
        else:
            await _open_loop(one, send_times, t0)
    except asyncio.CancelledError:
        pass
    finally:
        if own:
            await http.aclose()
    return [r or _unsent(i, items[i], send_times) for i, r in enumerate(records)]


def _unsent(index: int, item: WorkItem, send_times: Sequence[float]) -> RequestRecord:
    scheduled = float(send_times[index]) if index < len(send_times) else 0.0
    return RequestRecord(index, item.prompt_tokens, 0, item.output_tokens, scheduled, error=NOT_SENT)


async def _open_loop(one: Callable[[int, float], Any], send_times: Sequence[float], t0: float) -> None:
    tasks: list[asyncio.Task[None]] = []
    try:
        for i, at in enumerate(send_times):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, float(at))))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # let each record what it got


async def _closed_loop(one: Callable[[int, float], Any], n: int, workers: int, t0: float) -> None:
    next_index = iter(range(n))

    async def worker() -> None:
        for i in next_index:
            await one(i, time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(min(workers, n))))


def send_schedule(items: Sequence[WorkItem], arrival: ArrivalSpec, qps: float, seed: int) -> list[float]:
    """Send offsets for ``items`` under ``arrival`` at ``qps`` (all zeros for closed-loop concurrency)."""
    if arrival.process is None:
        return [0.0] * len(items)
    stamps = [i.timestamp for i in items] if arrival.process == "trace" else None
    times = arrival_times(
        arrival.process,
        len(items),
        qps=qps,
        burstiness=arrival.burstiness,
        seed=seed,
        timestamps=stamps,
        time_scale=arrival.time_scale,
    )
    return [float(t) for t in times]


async def run_live(
    items: Sequence[WorkItem],
    send_times: Sequence[float],
    spec: LoadSpec,
    *,
    label: str,
    config: dict[str, Any],
    slo: RequestSlo | None = None,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> RunResult:
    """Benchmark the endpoint and return the result (``spec.model`` empty: the endpoint's first model)."""
    async with make_client(spec) as client:
        if not spec.model:
            spec = dataclasses.replace(spec, model=await first_model(client, spec.endpoint, spec.api_key))
        records = await run_load(items, send_times, spec, on_done=on_done, client=client)
    config = {**config, "model": spec.model, "api": spec.api, "endpoint": spec.endpoint}
    if slo is not None:
        config["slo"] = str(slo)
    return RunResult.build(label, "live", config, records, slo=slo)
