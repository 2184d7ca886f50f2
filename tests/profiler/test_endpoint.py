"""`profile engine`: step times from token timestamps, the robust engine fit, and a run against the emulator."""

from __future__ import annotations

import random

import httpx
import pytest

from blockctl.engine.fit import MeasuredRow
from blockctl.engine.profile import GpuSpec, load_profile, profile_from_document
from blockctl.engine.types import StepShape
from blockctl_agents.emulator.app import create_app as emulator_app
from blockctl_agents.profiler.endpoint import Stream
from blockctl_agents.profiler.endpoint_fit import fit_engine_params
from blockctl_agents.profiler.endpoint_run import EnginePlan, engine_profile, profile_endpoint
from blockctl_agents.profiler.endpoint_steps import decode_rows, mixed_rows, mixed_steps
from blockctl_agents.profiler.shape import resolve
from tests.conftest import serve_app


def _stream(prompt: int, times: list[float], sent: float = 0.0) -> Stream:
    s = Stream(prompt, len(times), sent=sent, tokens=times)
    s.done = times[-1] + 0.001
    return s


def test_decode_rows_read_the_step_time_of_a_batch() -> None:
    rng = random.Random(0)
    runs = []
    for _ in range(2):
        streams = []
        for k in range(4):  # 4 streams, 3 ms steps, client jitter of 0.2 ms; the client falls behind once and
            times = [0.010 + 0.003 * i + rng.uniform(0, 2e-4) + k * 1e-5 for i in range(60)]
            times[30:36] = [times[36] - 1e-5 * (36 - i) for i in range(30, 36)]  # reads 6 tokens in a bunch
            streams.append(_stream(100, times))
        runs.append(streams)
    rows = decode_rows(runs, segments=3)
    assert len(rows) == 3 and all(r.decode_batch == 4 and r.prefill_tokens == 0 for r in rows)
    assert all(abs(r.ms_median - 3.0) < 0.25 for r in rows), rows
    assert rows[0].decode_context < rows[1].decode_context < rows[2].decode_context


def test_mixed_steps_take_the_gap_that_ends_with_the_first_token_of_a_lone_injection() -> None:
    step = 0.002
    background = [_stream(16, [step * (i + 1) for i in range(100)]) for _ in range(2)]
    for s in background:  # the step that ran the injected prefill took 7 ms
        s.tokens[40:] = [t + 0.005 for t in s.tokens[40:]]
    alone = _stream(128, [background[0].tokens[40], background[0].tokens[41]], sent=0.075)
    steps = mixed_steps(background, [alone])
    assert len(steps) == 1 and steps[0][0] == 128 and abs(steps[0][1] - 0.007) < 1e-9
    other = _stream(64, [background[0].tokens[40] + 1e-5, background[0].tokens[42]], sent=0.076)
    assert mixed_steps(background, [alone, other]) == []  # prefilled together: neither is one clean prefill
    rows = mixed_rows(steps * 3, batch=2)
    assert len(rows) == 1 and rows[0].prefill_tokens == 128 and rows[0].decode_batch == 2


def test_engine_fit_recovers_a_linear_engine_despite_outliers() -> None:
    rng = random.Random(1)

    def truth(s: StepShape) -> float:
        return 2.0 + 0.004 * (s.prefill_tokens + s.decode_batch) + 0.3e-3 * s.decode_context + 0.1 * s.decode_batch

    rows = []
    for b in (1, 2, 4, 8):
        for ctx in (40, 300):
            for p in (0, 64, 256):
                shape = MeasuredRow(p, 0, b, ctx, 1.0, 1.0, 1.0).shape()
                ms = truth(shape) * (1 + rng.gauss(0, 0.02)) * (3.0 if rng.random() < 0.08 else 1.0)
                rows.append(MeasuredRow(p, 0, b, ctx, ms, ms, ms))
    params = fit_engine_params(rows)
    assert params.roofline_p == 1.0 and params.linear_mem_ms == 0.0 and params.cached_ms_per_ktoken == 0.0
    from blockctl.engine.steptime import StepTimeModel

    model = StepTimeModel(params, overhead_ms=0.0)
    for r in rows[::5]:
        assert abs(model.gpu_ms(r.shape()) / truth(r.shape()) - 1) < 0.08


def test_engine_fit_takes_the_roofline_form_where_the_rows_show_its_knee() -> None:
    """Decode steps on a weight-read floor, prefill compute-bound (as vLLM on CPU, README): a straight line
    through both prices short prefills far too high; the roofline form cross-validates better and is kept."""
    from blockctl.engine.fit import kfold_mape
    from blockctl.engine.steptime import StepTimeModel
    from blockctl_agents.profiler.endpoint_fit import fit_linear, fit_roofline

    rng = random.Random(2)

    def truth(s: StepShape) -> float:
        linear = max(16.0, 0.95 * (s.prefill_tokens + s.decode_batch))  # weight reads, then compute
        return 2.0 + linear + 3e-3 * s.decode_context

    rows = []
    for b in (1, 2, 4, 8):
        for ctx in (40, 150, 390):
            ms = truth(MeasuredRow(0, 0, b, ctx, 1.0, 1.0, 1.0).shape()) * (1 + rng.gauss(0, 0.02))
            rows.append(MeasuredRow(0, 0, b, ctx, ms, ms, ms))
    for b in (2, 7):
        for p in (64, 128, 256):
            ms = truth(MeasuredRow(p, 0, b, 120, 1.0, 1.0, 1.0).shape()) * (1 + rng.gauss(0, 0.02))
            rows.append(MeasuredRow(p, 0, b, 120, ms, ms, ms))
    assert kfold_mape(rows, fitter=fit_roofline) < kfold_mape(rows, fitter=fit_linear)
    params = fit_engine_params(rows)
    assert params.linear_mem_ms > 0.0 and params.roofline_p > 1.0
    assert params.cached_ms_per_ktoken == 0.0  # no row had a cached prefix: nothing to say about it
    model = StepTimeModel(params, overhead_ms=0.0)
    short = MeasuredRow(16, 0, 7, 120, 1.0, 1.0, 1.0).shape()  # interpolated, not a measured row
    assert abs(model.gpu_ms(short) / truth(short) - 1) < 0.15
    linear = StepTimeModel(fit_linear(rows), overhead_ms=0.0)
    assert abs(linear.gpu_ms(short) / truth(short) - 1) > abs(model.gpu_ms(short) / truth(short) - 1)


def test_engine_profile_is_a_profile_with_the_request_overhead() -> None:
    rows = [MeasuredRow(p, 0, b, 100, ms, 0.9 * ms, 1.1 * ms)
            for b in (1, 2, 4, 8) for p in (0, 32, 128, 256) for ms in [2.0 + 0.01 * p + 0.1 * b]]
    idle = [(p, (2.0 + 0.01 * p + 0.1 + 8.0) / 1e3) for p in (16, 64, 256)]  # 8 ms beyond the prefill step
    doc = engine_profile("cpu/x", GpuSpec("engine", 2**30), resolve("tiny"),
                         {"rows": rows, "idle": idle, "tail_s": 0.0005}, {"seconds": 1.0})
    prof = profile_from_document(doc, source="test")
    assert prof.model.overhead_ms == 0.0 and "kfold_mape_pct" in prof.fit["cv"]
    assert abs(prof.fit["request_overhead_ms"] - 8.0) < 1.0 and prof.fit["request_tail_ms"] == 0.5


@pytest.mark.slow
async def test_profiling_the_emulator_recovers_its_step_times() -> None:
    emulated = load_profile("h100/llama-2-7b").model
    app = emulator_app(max_num_seqs=8, max_model_len=1024, noise=0.0)
    plan = EnginePlan(max_batch=8, decode_steps=48, repeats=1, idle_repeats=2, injections=3)
    async with serve_app(app) as url:
        for _ in range(2):  # a second run against the warm engine, as a user re-profiling would do
            doc = await profile_endpoint(url, "emu/test", GpuSpec("engine", 80 * 2**30), "llama-2-7b", plan,
                                         lambda _: None, resolve_shape=resolve)
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            metrics = (await http.get("/metrics")).text
    # fresh prompts every run: none was served from the prefix cache (its prefill would be timed as free)
    hits = [line for line in metrics.splitlines() if line.startswith("vllm:prefix_cache_hits_total")]
    assert hits and float(hits[0].split()[-1]) == 0.0, hits
    prof = profile_from_document(doc, source="test")
    assert doc["measurement"]["max_model_len"] == 1024 and len(prof.rows) >= 12
    for b in (1, 8):
        shape = StepShape(decode_batch=b, decode_context=b * 200)
        measured, truth = prof.model.step_seconds(shape), emulated.step_seconds(shape)
        assert abs(measured / truth - 1) < 0.2, (b, measured, truth)
    # the per-request overhead is what the emulator adds before a first token beyond its prefill step
    beyond = [ms - 1e3 * emulated.step_seconds(MeasuredRow(p, 0, 0, 0, 1.0, 1.0, 1.0).shape())
              for p, ms in doc["measurement"]["idle_ttft_ms"]]
    assert abs(doc["fit"]["request_overhead_ms"] - sorted(beyond)[len(beyond) // 2]) < 3.0
