"""`blockctl profile engine`: profile a running engine through its OpenAI API and fit the step-time model.

The plan (sizes scale with the engine's ``max_model_len`` and the largest batch asked for):

1. **idle**: single requests of several prompt lengths on an idle engine, ``max_tokens`` 2 — their TTFT is
   the per-request overhead plus one prefill step;
2. **decode-heavy**: ``B`` concurrent streams with the same prompt and output length for ``B`` in 1, 2, 4, …
   max batch, at a short and a long prompt — pure-decode steps over a range of batch sizes and contexts;
3. **prefill-heavy**: requests of several prompt lengths injected, a few decode steps apart, into a batch of
   decoding streams — the steps that mix one prefill chunk with a decode batch.

Step rows (2, 3) fit the usual step-time model (:mod:`blockctl.engine.fit`, 5-fold and leave-one-region-out
cross-validation); the engine's whole step is measured, so the profile's per-step ``overhead_ms`` is 0 and
``const_ms`` is what every step costs (scheduler, sampling, output processing and fixed kernels together:
a black box cannot split them). The per-request overhead is ``median(idle TTFT - model prefill step)``,
stored as ``fit.request_overhead_ms``; the agents start their TTFT calibration from it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blockctl.engine.fit import MeasuredRow, predict_rows
from blockctl.engine.profile import GpuSpec, build_profile
from blockctl.engine.shape import ModelShape
from blockctl.engine.steptime import StepTimeParams
from blockctl.errors import ProfileError
from blockctl_agents.profiler.endpoint import EngineClient, Progress, Stream
from blockctl_agents.profiler.endpoint_fit import fit_engine_params
from blockctl_agents.profiler.endpoint_steps import decode_rows, mixed_rows, mixed_steps, request_tail_s

FORM_NOTE = "black-box engine profile: whole engine steps from token timestamps (overhead included)"


@dataclass(frozen=True, slots=True)
class EnginePlan:
    max_batch: int = 8
    decode_steps: int = 96  # output tokens of each decode-heavy stream
    idle_repeats: int = 5
    injections: int = 5  # prefill-heavy: injections of each prompt length per background batch
    spacing_steps: int = 12  # decode steps between two injections
    segments: int = 3  # context slices per decode-heavy run
    repeats: int = 3  # runs of each decode-heavy batch, pooled (a burst of host load is outvoted)

    def batches(self) -> list[int]:
        out, b = [], 1
        while b < self.max_batch:
            out.append(b)
            b *= 2
        return [*out, self.max_batch]


def _prompts(max_len: int, room: int) -> list[int]:
    """Prompt lengths from short to about half the context, leaving ``room`` tokens of output."""
    top = max(16, min(max_len // 2, max_len - room - 1))
    return sorted({16, max(16, top // 4), max(16, top // 2), top})


async def measure(client: EngineClient, plan: EnginePlan, progress: Progress) -> dict[str, Any]:
    """Run the plan; returns step rows, idle TTFT samples and timing facts (see the module docstring)."""
    max_len = client.max_model_len or 2048
    steps = max(8, min(plan.decode_steps, max_len // 3))
    prompts = _prompts(max_len, steps)
    await client.batch([(16, 4, 0.0)])  # warm-up: the first request pays one-off costs
    progress("idle requests")
    idle: list[tuple[int, float]] = []
    for _ in range(plan.idle_repeats):  # lengths interleaved: a burst of host load spreads over all of them
        for p in prompts:
            (s,) = await client.batch([(p, 2, 0.0)])
            if s.ttft is not None:
                idle.append((p, s.ttft))
    rows: list[MeasuredRow] = []
    tails: list[Stream] = []
    for b in plan.batches():
        for p in (prompts[0], prompts[-1]):
            progress(f"decode batch {b}, prompt {p}")
            if p + steps > max_len:
                continue
            runs = [await client.batch([(p, steps, 0.0)] * b) for _ in range(plan.repeats)]
            rows += decode_rows(runs, plan.segments)
            tails += [s for run in runs for s in run]
    step_s = statistics.median(r.ms_median for r in rows) / 1e3 if rows else 0.02
    inject = [p for p in prompts if p > 16] or prompts
    bg_prompt = prompts[0]
    # Injections come far enough apart that each runs alone (a few idle first-token times), each background
    # batch takes as many as its context allows, repeated until every prompt length was injected
    # ``plan.injections`` times.
    spacing = max(plan.spacing_steps * step_s, 4 * statistics.median(t for _, t in idle) if idle else 0.0)
    room = max_len - bg_prompt - 1  # most background tokens
    per_run = max(1, min(len(inject) * plan.injections, int((room * step_s) / spacing) - 2))
    order = [inject[k % len(inject)] for k in range(per_run)]
    bg_len = min(room, int((per_run + 2) * spacing / step_s))
    n_runs = -(-len(inject) * plan.injections // per_run)
    injected = found = 0
    for b in sorted({max(1, plan.max_batch // 4), max(1, plan.max_batch - 1)}):
        progress(f"prefill into a decode batch of {b}")
        specs = [(bg_prompt, bg_len, 0.0)] * b
        mixed: list[tuple[int, float, int]] = []
        for _ in range(n_runs):
            streams = await client.batch(
                specs + [(p, 2, 4 * step_s + k * spacing) for k, p in enumerate(order)]  # 1 token may be ""
            )
            mixed += mixed_steps(streams[:b], streams[b:])
            injected += len(order)
        found += len(mixed)
        rows += mixed_rows(mixed, b)
    # a loaded client reads tokens late and in bunches: then few injected prefills line up (reported)
    prefill_heavy = {"injected": injected, "steps_found": found}
    return {"rows": rows, "idle": idle, "tail_s": request_tail_s(tails), "prefill_heavy": prefill_heavy}


def engine_profile(
    name: str, gpu: GpuSpec, shape: ModelShape, measured: dict[str, Any], info: dict[str, Any]
) -> dict[str, Any]:
    """The profile document: the step model fitted on the measured steps, and the per-request overheads."""
    rows: list[MeasuredRow] = measured["rows"]
    if len(rows) < 12:  # the cross-validation needs some rows to hold out
        raise ProfileError(f"only {len(rows)} engine steps could be read from the streams (need 12)",
                           hint="a larger --max-batch or longer --decode-steps")
    doc = build_profile(name, gpu, shape, rows, info, overhead_ms=0.0, fitter=fit_engine_params)
    params = StepTimeParams.from_dict(doc["fit"]["params"])
    idle: list[tuple[int, float]] = measured["idle"]
    prefill = [MeasuredRow(p, 0, 0, 0, 1.0, 1.0, 1.0) for p, _ in idle]
    model_ms = predict_rows(params, prefill)
    extra = [1e3 * ttft - m for (_, ttft), m in zip(idle, model_ms, strict=True)]
    doc["fit"]["request_overhead_ms"] = max(0.0, statistics.median(extra)) if extra else 0.0
    doc["fit"]["request_tail_ms"] = 1e3 * float(measured["tail_s"])
    doc["fit"]["note"] = FORM_NOTE
    doc["measurement"]["idle_ttft_ms"] = [[p, round(1e3 * t, 3)] for p, t in idle]
    doc["measurement"]["prefill_heavy"] = measured.get("prefill_heavy")
    return doc


async def profile_endpoint(
    url: str, name: str, gpu: GpuSpec, shape: str | None, plan: EnginePlan, progress: Progress,
    *, resolve_shape: Callable[[str], ModelShape], api_key: str | None = None, seed: int | None = None,
) -> dict[str, Any]:
    """Measure the engine at ``url`` and return its profile; ``shape`` (a built-in name or a directory with
    config.json) defaults to the id the engine serves."""
    started = time.perf_counter()
    async with EngineClient(url, api_key=api_key, seed=seed) as client:
        served = client.model
        model_shape = resolve_shape(shape or served or "")  # fails before measuring if unknown
        measured = await measure(client, plan, progress)
        max_len = client.max_model_len
    info = {
        "method": "profile engine: token timestamps of controlled streaming batches (black box)",
        "endpoint_model": served,
        "max_model_len": max_len,
        "max_batch": plan.max_batch,
        "decode_steps": plan.decode_steps,
        "seconds": round(time.perf_counter() - started, 1),
        "description": f"{served} served at the measured endpoint, whole engine steps",
    }
    return engine_profile(name, gpu, model_shape, measured, info)
