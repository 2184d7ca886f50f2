"""Steady-state capacity of each policy in simulation: saturation, then bisection; policies in parallel."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blockctl.bench.capacity import Slo
from blockctl.bench.sim.run import SimSetup, judge, prepared_for, run_policy
from blockctl.bench.steady import (
    SATURATION_WARMUP,
    WARMUP_FRACTION,
    ProbeOutcome,
    Saturation,
    abort_windows,
)
from blockctl.bench.steady_search import Plan, PolicyCapacity, Probe, find_capacity, find_saturation
from blockctl.bench.workers import worker_pool
from blockctl.scheduler.policies import POLICIES, make_policy

Progress = Callable[[str, ProbeOutcome, bool], None]  # (policy, outcome, saturation probe) after each probe


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """How to search: SLOs that must all hold, bisection resolution (QPS, and relative to the answer), the
    first QPS offered when measuring saturation without a hint, the QPS ceiling, and the seconds of arrivals
    of a saturation probe (overloaded queues fill in seconds; the what-ifs behind them grow with the queue)."""

    slos: tuple[Slo, ...]
    resolution: float = 0.1
    rel_resolution: float = 0.01
    start: float | None = None  # None: AUTO_START_PER_INSTANCE × instances
    max_qps: float = 10_000.0
    saturation_s: float = 60.0


AUTO_START_PER_INSTANCE = 8.0  # QPS per instance first offered when nothing better is known


def _plan(setup: SimSetup, spec: SearchSpec) -> Plan:
    start = spec.start if spec.start is not None else AUTO_START_PER_INSTANCE * setup.instances
    return Plan(start=start, resolution=spec.resolution, rel_resolution=spec.rel_resolution, max_qps=spec.max_qps)


def probe(setup: SimSetup, policy: str, spec: SearchSpec, qps: float, saturation: bool) -> ProbeOutcome:
    """One simulated probe: a saturation probe runs ``spec.saturation_s`` seconds of arrivals to the end; a
    capacity probe runs the setup's duration (or request count) and stops once an SLO is certainly broken."""
    run_setup = dataclasses.replace(setup, duration=spec.saturation_s) if saturation else setup
    n = run_setup.requests_at(qps)
    abort = None if saturation else abort_windows(spec.slos, n)
    run = run_policy(run_setup, prepared_for(run_setup, n), policy, qps, abort=abort)
    return judge(run, spec.slos, warmup=SATURATION_WARMUP if saturation else WARMUP_FRACTION)


def _prober(setup: SimSetup, policy: str, spec: SearchSpec, progress: Progress | None) -> Probe:
    def one(q: float, sat: bool) -> ProbeOutcome:
        out = probe(setup, policy, spec, q, sat)
        if progress is not None:
            progress(policy, out, sat)
        return out

    return one


def _saturation(setup: SimSetup, policy: str, spec: SearchSpec, progress: Progress | None) -> Saturation | None:
    return find_saturation(_prober(setup, policy, spec, progress), _plan(setup, spec))


def _search(
    setup: SimSetup, policy: str, spec: SearchSpec, measured: tuple[Saturation | None] | None,
    hint: float | None, progress: Progress | None,
) -> tuple[str, PolicyCapacity]:
    """Saturation (unless ``measured`` already; offering from ``hint`` when known), then capacity."""
    one = _prober(setup, policy, spec, progress)
    plan = _plan(setup, spec)
    saturation = find_saturation(one, plan, hint) if measured is None else measured[0]
    return policy, find_capacity(one, plan, saturation)


def capacities(
    setup: SimSetup,
    policies: Sequence[str],
    spec: SearchSpec,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> dict[str, PolicyCapacity]:
    """Steady-state capacity and saturation per policy, in the order given, using ``jobs`` processes (default:
    one per CPU core); the probes are the same whatever ``jobs`` is.

    The cheap (non-predictive) policies' saturation is measured first, from ``spec.start`` upwards; the
    predictive ones (a what-if per instance asked, slower the longer the queues) then measure theirs offering
    ``overload`` × the best of those, in one probe. Then every policy's capacity search runs as one task,
    the slow ones first. ``progress`` is called after every probe, in the process that ran it (with jobs > 1
    it must be a picklable module-level function).
    """
    for name in policies:
        make_policy(name)  # unknown names fail before any work
    setup.validate()
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    cheap = [p for p in policies if not POLICIES[p].needs_prediction]
    sats: dict[str, Saturation | None] = {}
    pool = worker_pool(min(jobs, len(policies))) if jobs > 1 and len(policies) > 1 else None
    try:
        if pool is None:
            sats = {p: _saturation(setup, p, spec, progress) for p in cheap}
        else:
            futures = {p: pool.submit(_saturation, setup, p, spec, progress) for p in cheap}
            sats = {p: f.result() for p, f in futures.items()}
        known = [s.completed_rps for s in sats.values() if s is not None]
        hint = max(known) if known else None
        order = sorted(policies, key=lambda p: not POLICIES[p].needs_prediction)  # slow ones first
        tasks = [(setup, p, spec, (sats[p],) if p in sats else None, hint, progress) for p in order]
        if pool is None:
            found = dict(_search(*t) for t in tasks)
        else:
            found = dict(f.result() for f in [pool.submit(_search, *t) for t in tasks])
    finally:
        if pool is not None:
            pool.shutdown()
    return {p: found[p] for p in policies}
