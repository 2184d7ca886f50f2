"""Autoscaling on the real local cluster: one phased trace per policy, the controller acting, sizes sampled.

For each run the cluster is first brought to its starting size (``scale_to``), the controller is started
(none for the fixed run), the trace is sent through the scheduler with the load generator while cluster.json
is sampled every ``sample_s``; the result is an :class:`AutoscaleRun` (as the simulator's), so the same
figures and plot apply. Instance-seconds are counted from the samples (starting instances included).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

from blockctl.bench.loadgen import run_load
from blockctl.bench.metrics import RequestRecord
from blockctl.bench.sim.autoscale import AutoscaleRun, Tick
from blockctl.bench.sim.cluster import SimRecord
from blockctl.bench.wire import LoadSpec
from blockctl.bench.workloads import WorkItem
from blockctl.cluster import autoscale_local, autoscaler
from blockctl.cluster.scaler import AutoscaleConfig, ScaleDecision
from blockctl.cluster.state import load_state


def _sim_record(rec: RequestRecord, item: WorkItem) -> SimRecord:
    # the reply's real length (the load generator sends none: the engine decides, see bench.livelengths)
    real = rec.output_tokens if rec.error is None else item.output_tokens
    out = SimRecord(rec.index, rec.instance or "?", rec.scheduled_s, item.prompt_tokens, real,
                    rec.predicted_output_tokens or real)
    if rec.error is None and rec.ttft_s is not None and rec.e2e_s is not None:
        sent = rec.sent_s if rec.sent_s is not None else rec.scheduled_s
        out.first_token_time = sent + rec.ttft_s  # latency counted from the schedule, as the sim does
        out.finish_time = sent + rec.e2e_s
    else:
        out.error = rec.error
    return out


async def _sample(state_dir: Path, t0: float, sample_s: float, out: list[tuple[float, list[str], list[str]]]) -> None:
    while True:
        state = load_state(state_dir)
        if state is not None:
            serving = [i.name for i in state.serving()]
            starting = [i.name for i in state.instances if autoscale_local.starting(i)]
            out.append((time.perf_counter() - t0, serving, starting))
        await asyncio.sleep(sample_s)


def _decisions(state_dir: Path, wall0: float) -> list[tuple[float, ScaleDecision]]:
    path = state_dir / autoscaler.DECISIONS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d["action"] != "hold" and d["time"] >= wall0:
            out.append((d["time"] - wall0, ScaleDecision(d["target"], d["action"], d["reason"])))
    return out


def to_run(label: str, records: list[SimRecord], samples: Sequence[tuple[float, list[str], list[str]]],
           decisions: Sequence[tuple[float, ScaleDecision]], sample_s: float) -> AutoscaleRun:
    """Pure: an AutoscaleRun from sampled membership (each sample stands for ``sample_s`` seconds)."""
    ticks: list[Tick] = []
    pending = list(decisions)
    lifetimes: dict[str, tuple[float, float]] = {}
    ready_at: dict[str, float] = {}
    for t, serving, starting in samples:
        decision = None
        while pending and pending[0][0] <= t:
            decision = pending.pop(0)[1]
        ticks.append(Tick(t, len(serving), len(starting), decision))
        for name in (*serving, *starting):
            a, _ = lifetimes.get(name, (t, t))
            lifetimes[name] = (a, t + sample_s)
        for name in serving:
            ready_at.setdefault(name, t)
    return AutoscaleRun(label, records, ticks, lifetimes, ready_at)


def run_live_autoscale(
    state_dir: Path, endpoint: str, items: Sequence[WorkItem], arrivals: Sequence[float], *, label: str,
    scale: AutoscaleConfig | None, initial: int, startup_delay_s: float, sample_s: float = 0.5,
) -> AutoscaleRun:
    """One run (``scale`` None: ``initial`` instances throughout); leaves the controller stopped."""
    autoscaler.stop(state_dir)
    autoscale_local.scale_to(state_dir, initial, startup_delay_s=startup_delay_s)
    wall0 = [time.time()]
    if scale is not None:
        autoscaler.start(state_dir, scale, advisory=False, startup_delay_s=startup_delay_s)
    spec = LoadSpec(endpoint=endpoint, model="emulated")
    samples: list[tuple[float, list[str], list[str]]] = []

    async def go() -> list[RequestRecord]:
        t0, wall0[0] = time.perf_counter(), time.time()
        sampler = asyncio.get_running_loop().create_task(_sample(state_dir, t0, sample_s, samples))
        try:
            return await run_load(items, arrivals, spec)
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)

    try:
        records = asyncio.run(go())
    finally:
        autoscaler.stop(state_dir)
    sims = [_sim_record(r, items[r.index]) for r in records]
    return to_run(label, sims, samples, _decisions(state_dir, wall0[0]), sample_s)
