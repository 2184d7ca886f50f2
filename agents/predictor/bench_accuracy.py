"""Drive load through a live agent and score the prediction made at dispatch against what happened.

Each request is dispatched like the scheduler does it: ``POST /predict`` first (the recorded prediction),
then the completion with ``x-blockctl-predicted-output-tokens``. The engine gets ``ignore_eos`` and
``max_tokens`` = the true length; the prompt is sent as token ids so both sides agree on its length.
TTFT and E2E are measured by the client from the moment the completion is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from blockctl.predict.lengths import QUANTILES_HEADER, LengthDist, format_atoms
from blockctl_agents.predictor.sse import SseTokenCounter

TAIL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Outcome:
    prompt_tokens: int
    output_tokens: int  # true
    predicted_output_tokens: int
    predicted_ttft_s: float
    predicted_e2e_s: float
    running_at_dispatch: int
    waiting_at_dispatch: int
    ttft_s: float | None = None
    e2e_s: float | None = None
    tokens: int = 0
    error: str | None = None


def ape_summary(predicted: Sequence[float], actual: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and median absolute percentage error, and mean signed error (positive: pessimistic)."""
    if not actual:
        return {"n": 0, "mape_pct": None, "mdape_pct": None, "p90_ape_pct": None, "bias_pct": None}
    p, a = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    rel = (p - a) / a * 100
    ape = np.abs(rel)
    return {
        "n": len(a),
        "mape_pct": float(ape.mean()),
        "mdape_pct": float(np.median(ape)),
        "p90_ape_pct": float(np.percentile(ape, 90)),
        "bias_pct": float(rel.mean()),
    }


def summarize(outcomes: Sequence[Outcome]) -> dict[str, object]:
    done = [o for o in outcomes if o.error is None and o.e2e_s is not None and o.e2e_s > 0]
    with_ttft = [o for o in done if o.ttft_s is not None and o.ttft_s > 0]
    return {
        "requests": len(outcomes),
        "completed": len(done),
        "failed": len(outcomes) - len(done),
        "e2e": ape_summary([o.predicted_e2e_s for o in done], [o.e2e_s for o in done if o.e2e_s is not None]),
        "ttft": ape_summary(
            [o.predicted_ttft_s for o in with_ttft], [o.ttft_s for o in with_ttft if o.ttft_s is not None]
        ),
        "mean_running_at_dispatch": float(np.mean([o.running_at_dispatch for o in done])) if done else 0,
        "max_waiting_at_dispatch": max((o.waiting_at_dispatch for o in done), default=0),
        "actual_e2e_p50_s": float(np.median([o.e2e_s for o in done])) if done else None,
    }


async def _one(
    client: httpx.AsyncClient,
    model: str | None,
    prompt_tokens: int,
    true_out: int,
    predicted_out: int,
    prompt: list[int] | None = None,
    length: LengthDist | None = None,
) -> Outcome:
    """One dispatch; ``prompt`` (token ids) defaults to ``prompt_tokens`` ones (a real engine's prefix cache
    would hit on those: pass distinct ids there). ``length``: the predicted length's distribution, sent in the
    quantiles header (the agent keeps it in place of the exact ``predicted_out``)."""
    ask = {"prompt_tokens": prompt_tokens, "predicted_output_tokens": predicted_out}
    pred = (await client.post("/predict", json=ask)).raise_for_status().json()
    base = {
        "prompt_tokens": prompt_tokens,
        "output_tokens": true_out,
        "predicted_output_tokens": predicted_out,
        "predicted_ttft_s": pred["ttft_s"],
        "predicted_e2e_s": pred["e2e_s"],
        "running_at_dispatch": pred["running"],
        "waiting_at_dispatch": pred["waiting"],
    }
    body = {
        "prompt": prompt if prompt is not None else [1] * prompt_tokens,
        "max_tokens": true_out,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        **({"model": model} if model else {}),
    }
    headers = {
        "x-blockctl-predicted-output-tokens": str(predicted_out),
        "x-blockctl-prompt-tokens": str(prompt_tokens),
        "x-blockctl-predicted-ttft-ms": str(pred["ttft_s"] * 1e3),
        "x-blockctl-predicted-e2e-ms": str(pred["e2e_s"] * 1e3),
        **({QUANTILES_HEADER: format_atoms(length)} if length is not None else {}),
    }
    counter = SseTokenCounter()
    ttft = None
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/completions", json=body, headers=headers) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return Outcome(**base, error=f"HTTP {resp.status_code}: {resp.text[:200]}")
            tail = b""
            async for chunk in resp.aiter_raw():
                if ttft is None:  # parse only until the first token (keeps the client light)
                    if counter.feed(chunk):
                        ttft = time.perf_counter() - t0
                else:
                    tail = (tail + chunk)[-TAIL_BYTES:]
        e2e = time.perf_counter() - t0
    except httpx.HTTPError as exc:
        return Outcome(**base, error=type(exc).__name__)
    end = SseTokenCounter()  # the usage chunk and any error event are at the end of the stream
    end.feed(tail[tail.find(b"\n\n") + 2 :] if len(tail) == TAIL_BYTES else tail)
    tokens = end.usage_completion_tokens or counter.usage_completion_tokens or 0
    return Outcome(**base, ttft_s=ttft, e2e_s=e2e, tokens=tokens, error=counter.error or end.error)


async def drive(
    agent_url: str,
    headers: dict[str, str],
    requests: Sequence[tuple[int, int, int]],
    offsets: Sequence[float],
    dists: Sequence[LengthDist | None] | None = None,
) -> list[Outcome]:
    """Send ``(prompt_tokens, true_output_tokens, predicted_output_tokens)`` at ``offsets`` (seconds); with
    ``dists``, each request's length distribution goes with it as the router sends it (a quantiles header)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=2.0)
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=30.0, pool=None)
    async with httpx.AsyncClient(base_url=agent_url, headers=headers, limits=limits, timeout=timeout) as client:
        models = (await client.get("/v1/models")).json().get("data") or [{}]
        model = models[0].get("id")
        start = time.perf_counter()

        async def at(offset: float, req: tuple[int, int, int], length: LengthDist | None) -> Outcome:
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                return await _one(client, model, *req, length=length)
            except httpx.HTTPError as exc:  # /predict failed: counted, not fatal
                return Outcome(req[0], req[1], req[2], 0.0, 0.0, 0, 0, error=f"/predict: {type(exc).__name__}")

        lengths = dists if dists is not None else [None] * len(requests)
        return list(await asyncio.gather(*(at(o, r, d) for o, r, d in zip(offsets, requests, lengths, strict=True))))


def emulator_lag(metrics_text: str) -> dict[str, float | None]:
    """How far a real-time emulator fell behind its own step times (from its /metrics): the share of
    emulated time by which step completions ran late. Above a few % the host, not the predictor, dominates."""
    values: dict[str, float] = {}
    for line in metrics_text.splitlines():
        for name in ("blockctl_emulator_late_seconds_total", "blockctl_emulator_step_seconds_total"):
            if line.startswith(name):
                values[name] = float(line.split()[-1])
    late, steps = values.get("blockctl_emulator_late_seconds_total"), values.get("blockctl_emulator_step_seconds_total")
    return {
        "emulator_step_seconds": steps,
        "emulator_late_seconds": late,
        "emulator_late_fraction": late / steps if late is not None and steps else None,
    }
