"""Phased load for autoscaling runs (``0.5:120,2:180,1:120``) and the figures that judge a run."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blockctl.bench.sim.autoscale import AutoscaleRun
from blockctl.errors import ConfigError

TRACES = {
    "step": "0.5:120,2:240,1:120",  # ×capacity-qps for seconds: the 0.5× → 2× → 1×
    "burst": "1:120,3:40,1:160",
}


@dataclass(frozen=True, slots=True)
class Phase:
    factor: float  # multiple of the base QPS
    seconds: float


def parse_phases(spec: str) -> list[Phase]:
    """``FACTOR:SECONDS,...`` or a name in TRACES; ConfigError naming ``--trace``."""
    spec = TRACES.get(spec, spec)
    phases = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        a, sep, b = part.partition(":")
        try:
            phase = Phase(float(a), float(b))
        except ValueError:
            phase = None
        if not sep or phase is None or phase.factor < 0 or phase.seconds <= 0:
            raise ConfigError(f"'{part}': expected FACTOR:SECONDS (e.g. 2:60) or one of {', '.join(TRACES)}",
                              key="--trace")
        phases.append(phase)
    if not phases:
        raise ConfigError("no phase given", key="--trace")
    return phases


def phased_arrivals(phases: Sequence[Phase], base_qps: float, *, seed: int = 0) -> list[float]:
    """Poisson arrivals, rate ``factor × base_qps`` within each phase; same seed, same times."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    start = 0.0
    for ph in phases:
        rate = ph.factor * base_qps
        t = start
        while rate > 0:
            t += float(rng.exponential(1.0 / rate))
            if t >= start + ph.seconds:
                break
            out.append(t)
        start += ph.seconds
    return out


def phase_starts(phases: Sequence[Phase]) -> list[tuple[float, float]]:
    """(start time, factor) of each phase."""
    out, t = [], 0.0
    for ph in phases:
        out.append((t, ph.factor))
        t += ph.seconds
    return out


@dataclass(frozen=True, slots=True)
class Figures:
    label: str
    requests: int
    ttft_p99_s: float
    e2e_p99_s: float
    violation_s: float  # seconds of trace whose arrivals' P99 TTFT broke the SLO (``bin_s`` bins)
    instance_s: float  # instance-seconds paid (launch to stop, start-up included)
    mean_instances: float
    max_instances: int
    scale_ups: int
    scale_downs: int
    time_to_scale_s: float | None  # mean, over load increases, from the increase to the next instance ready

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def figures(run: AutoscaleRun, phases: Sequence[Phase], slo_ttft_s: float, *, bin_s: float = 10.0) -> Figures:
    recs = run.records
    ttft = [math.inf if r.ttft is None else r.ttft for r in recs]
    e2e = [math.inf if r.e2e is None else r.e2e for r in recs]
    bins: dict[int, list[float]] = {}
    for r, v in zip(recs, ttft, strict=True):
        bins.setdefault(int(r.arrival // bin_s), []).append(v)
    violated = sum(bin_s for vals in bins.values() if np.percentile(np.asarray(vals), 99.0) > slo_ttft_s)
    duration = max((b for _, b in run.lifetimes.values()), default=0.0)
    starts = phase_starts(phases)
    reactions = []
    for (_, f0), (t1, f1) in itertools.pairwise(starts):
        if f1 > f0:
            later = [at for at in run.ready_at.values() if at >= t1]
            if later:
                reactions.append(min(later) - t1)
    sizes = [tk.serving for tk in run.ticks]
    return Figures(
        label=run.label,
        requests=len(recs),
        ttft_p99_s=float(np.percentile(np.asarray(ttft), 99.0)) if recs else 0.0,
        e2e_p99_s=float(np.percentile(np.asarray(e2e), 99.0)) if recs else 0.0,
        violation_s=violated,
        instance_s=run.instance_seconds(),
        mean_instances=run.instance_seconds() / duration if duration else 0.0,
        max_instances=max(sizes, default=0),
        scale_ups=sum(1 for tk in run.ticks if tk.decision is not None and tk.decision.action == "up"),
        scale_downs=sum(1 for tk in run.ticks if tk.decision is not None and tk.decision.action == "down"),
        time_to_scale_s=sum(reactions) / len(reactions) if reactions else None,
    )
