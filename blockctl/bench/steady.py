"""Steady-state probes: does one run at a given QPS hold its SLOs *and* keep up with its arrivals?

A probe's first ``WARMUP_FRACTION`` of arrivals (by index, i.e. by arrival order) fill the queues and are left
out of every percentile. The probe is *stable* when the requests completed between the end of warm-up and the
last arrival came at no less than ``1 − STABLE_TOLERANCE`` of the rate at which they arrived in that window
(completed ÷ total duration would count the drain after the last arrival, and hide a queue that keeps
growing). It *holds* when it is stable and every SLO holds both over all post-warm-up requests and over the
last third of arrivals (a queue still growing at the end breaks there first).

Pure functions: the simulator and the live benchmark both hand in arrival and finish times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from blockctl.bench.capacity import Slo

WARMUP_FRACTION = 0.10
SATURATION_WARMUP = 0.5  # an overloaded run's mix of contexts settles later: measure over its second half
STABLE_TOLERANCE = 0.03
LAST_FRACTION = 1.0 / 3.0
SHORT_RUN_S = 120.0  # fewer seconds of arrivals than this: warn that the run may not reach steady state


def warmup_count(n: int, fraction: float = WARMUP_FRACTION) -> int:
    """How many of ``n`` arrivals are warm-up."""
    return math.ceil(fraction * n)


def last_third_start(n: int) -> int:
    """Index of the first arrival of the last third."""
    return n - max(1, math.ceil(LAST_FRACTION * n))


@dataclass(frozen=True, slots=True)
class Throughput:
    """Arrivals and completions inside the window (end of warm-up, last arrival]."""

    window_s: float
    arrived: int  # arrivals in the window
    completed: int  # completions (of any request) in the window

    @property
    def offered_rps(self) -> float:
        return self.arrived / self.window_s if self.window_s > 0 else math.inf

    @property
    def completed_rps(self) -> float:
        return self.completed / self.window_s if self.window_s > 0 else 0.0

    @property
    def stable(self) -> bool:
        return self.completed >= (1.0 - STABLE_TOLERANCE) * self.arrived


def window_throughput(
    arrivals: Sequence[float], finishes: Sequence[float | None], warmup: float = WARMUP_FRACTION
) -> Throughput:
    """Completion and arrival counts between the end of warm-up and the last arrival (arrivals sorted)."""
    n = len(arrivals)
    if n < 2:
        return Throughput(0.0, n, sum(f is not None for f in finishes))
    w = min(warmup_count(n, warmup), n - 1)
    t0, t1 = arrivals[w], arrivals[-1]
    completed = sum(1 for f in finishes if f is not None and t0 < f <= t1)
    return Throughput(t1 - t0, n - 1 - w, completed)


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """One probe. ``stable`` and the SLO values are None when the run stopped early (an SLO already certain to
    break): what was not measured is never reported."""

    qps: float
    held: bool
    stable: bool | None
    slo_values: Mapping[str, float | None] = field(default_factory=dict)  # over the post-warm-up requests
    last_third_values: Mapping[str, float | None] = field(default_factory=dict)
    completed_rps: float | None = None  # in the window [end of warm-up, last arrival]
    offered_rps: float | None = None
    requests: int = 0
    stopped_early: bool = False

    @property
    def slo_value(self) -> float | None:
        """The first SLO's value (the one ``--slo`` names first)."""
        return next(iter(self.slo_values.values()), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "qps": self.qps, "held": self.held, "stable": self.stable, "slo_value": _finite(self.slo_value),
            "slo_values": {k: _finite(v) for k, v in self.slo_values.items()},
            "last_third_slo_values": {k: _finite(v) for k, v in self.last_third_values.items()},
            "completed_rps": self.completed_rps, "offered_rps": self.offered_rps, "requests": self.requests,
            "stopped_early": self.stopped_early,
        }


def _finite(v: float | None) -> float | str | None:
    """JSON has no infinity: an infinite SLO value (a request failed) is written as the string "inf"."""
    return "inf" if v is not None and math.isinf(v) else v


def evaluate(
    qps: float,
    arrivals: Sequence[float],
    finishes: Sequence[float | None],
    samples: Mapping[Slo, Sequence[float]],
    *,
    warmup: float = WARMUP_FRACTION,
) -> ProbeOutcome:
    """Judge a complete run: ``arrivals`` sorted, ``finishes[i]`` of request i (None: failed or unfinished),
    ``samples[slo][i]`` request i's value of the SLO's metric (inf when it failed). A saturation probe is
    judged with ``warmup=SATURATION_WARMUP``."""
    n = len(arrivals)
    w, last = warmup_count(n, warmup), last_third_start(n)
    tp = window_throughput(arrivals, finishes, warmup)
    values: dict[str, float | None] = {}
    lasts: dict[str, float | None] = {}
    ok = tp.stable
    for slo, xs in samples.items():
        v, vl = slo.value(xs[w:] or xs), slo.value(xs[last:])
        values[str(slo)], lasts[str(slo)] = v, vl
        ok = ok and v <= slo.limit and vl <= slo.limit
    return ProbeOutcome(qps, ok, tp.stable, values, lasts, tp.completed_rps, tp.offered_rps, n)


def stopped(qps: float, n: int, slos: Sequence[Slo]) -> ProbeOutcome:
    """A probe stopped once an SLO was certain to break: not held, nothing else measured."""
    return ProbeOutcome(qps, False, None, {str(s): None for s in slos}, {str(s): None for s in slos},
                        requests=n, stopped_early=True)


@dataclass(frozen=True, slots=True)
class AbortWindow:
    """An early-stop rule: more than ``allowed`` requests with index ≥ ``start`` over ``slo.limit`` breaks it."""

    slo: Slo
    start: int
    allowed: int


def abort_windows(slos: Sequence[Slo], n: int) -> list[AbortWindow]:
    """For each percentile SLO on TTFT or E2E, the windows :func:`evaluate` judges it on (post-warm-up and
    last third), with how many violations each may take before the SLO is certainly broken."""
    out: list[AbortWindow] = []
    for slo in slos:
        if slo.metric not in ("ttft", "e2e") or slo.quantile is None:
            continue
        for start in (warmup_count(n), last_third_start(n)):
            allowed = slo.max_violations(n - start)
            if allowed is not None and start < n:
                out.append(AbortWindow(slo, start, allowed))
    return out


@dataclass(frozen=True, slots=True)
class Saturation:
    """Completed req/s while offered more than the policy could take (``offered_rps`` in the same window)."""

    completed_rps: float
    offered_rps: float
    probes: tuple[ProbeOutcome, ...]


def overloaded(o: ProbeOutcome) -> bool:
    """The probe was offered clearly more than it completed: its completion rate is a saturation measurement."""
    return (o.completed_rps is not None and o.offered_rps is not None
            and o.completed_rps < (1.0 - 2 * STABLE_TOLERANCE) * o.offered_rps)
