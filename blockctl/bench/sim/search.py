"""Capacity of each policy in simulation: bisection over QPS, one worker process per policy."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from blockctl.bench.capacity import CapacityResult, Slo, search_capacity
from blockctl.bench.sim.run import Prepared, SimRun, SimSetup, prepare, run_policy, slos_hold
from blockctl.scheduler.policies import POLICIES, make_policy

Progress = Callable[[str, float, bool], None]  # (policy, qps, slo held) after each simulated point


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """How to search: SLOs that must all hold, bisection resolution (QPS, and relative to the answer), first
    QPS tried, QPS ceiling."""

    slos: tuple[Slo, ...]
    resolution: float = 0.1
    rel_resolution: float = 0.01
    start: float | None = None  # None: see capacities()
    max_qps: float = 10_000.0
    growth: float = 2.0  # bracketing factor


AUTO_START_PER_INSTANCE = 8.0  # QPS per instance tried first when nothing better is known
NEAR_GROWTH = 1.25  # bracketing factor when starting from another policy's capacity


def _holds(setup: SimSetup, prepared: Prepared, policy: str, qps: float, slos: tuple[Slo, ...],
           progress: Progress | None) -> bool:
    abort = next((s for s in slos if s.metric in ("ttft", "e2e") and s.quantile is not None), None)
    run: SimRun = run_policy(setup, prepared, policy, qps, abort=abort)
    ok = slos_hold(run, slos)
    if progress is not None:
        progress(policy, qps, ok)
    return ok


_PREPARED: dict[SimSetup, Prepared] = {}


def _probe(setup: SimSetup, policy: str, qps: float, slos: tuple[Slo, ...], progress: Progress | None) -> bool:
    """One simulated point in a worker process (the workload is prepared once per process)."""
    if setup not in _PREPARED:
        _PREPARED[setup] = prepare(setup)
    return _holds(setup, _PREPARED[setup], policy, qps, slos, progress)


def policy_capacity(
    setup: SimSetup,
    prepared: Prepared,
    policy: str,
    spec: SearchSpec,
    progress: Progress | None = None,
    *,
    pool: ProcessPoolExecutor | None = None,
    width: int = 1,
) -> CapacityResult:
    """Highest QPS at which every SLO of ``spec`` holds for ``policy`` (runs stop early once one breaks).

    With a ``pool``, ``width`` QPS points are simulated at once in its processes (a lone slow policy then
    uses every core)."""

    def holds_many(qs: list[float]) -> list[bool]:
        if pool is None or len(qs) == 1:
            return [_holds(setup, prepared, policy, q, spec.slos, progress) for q in qs]
        futures = [pool.submit(_probe, setup, policy, q, spec.slos, progress) for q in qs]
        return [f.result() for f in futures]

    start = spec.start if spec.start is not None else AUTO_START_PER_INSTANCE * setup.instances
    return search_capacity(holds_many, width=width if pool is not None else 1, start=start,
                           resolution=spec.resolution, max_qps=spec.max_qps, rel_resolution=spec.rel_resolution,
                           growth=spec.growth)


def _worker(
    setup: SimSetup, policy: str, spec: SearchSpec, progress: Progress | None
) -> tuple[str, CapacityResult]:
    return policy, policy_capacity(setup, prepare(setup), policy, spec, progress)


def capacities(
    setup: SimSetup,
    policies: Sequence[str],
    spec: SearchSpec,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> dict[str, CapacityResult]:
    """Capacity per policy, in the order given, using ``jobs`` processes (default: one per CPU core).

    Without ``spec.start``, the cheap (non-predictive) policies are searched first, from 8 QPS per instance
    doubling; the predictive ones (a what-if per instance asked: the slow ones) then start from the best
    capacity found so far and bracket in steps of 25 %, which takes fewer, cheaper probes than doubling.
    ``progress`` is called after every probe, in the process that ran it (so with jobs > 1 it must be a
    picklable module-level function).
    """
    for name in policies:
        make_policy(name)  # unknown names fail before any work
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    prepare(setup)  # validate and warm the workload cache once, before any fork
    cheap = [p for p in policies if not POLICIES[p].needs_prediction]
    costly = [p for p in policies if POLICIES[p].needs_prediction]
    found: dict[str, CapacityResult] = {}
    if spec.start is None and cheap and costly:
        found.update(_run_all(setup, cheap, spec, jobs, progress))
        best = max(r.capacity for r in found.values())
        if best > 0:
            near = dataclasses.replace(spec, start=best, growth=NEAR_GROWTH)
            found.update(_run_all(setup, costly, near, jobs, progress))
            return {p: found[p] for p in policies}
    found.update(_run_all(setup, [p for p in policies if p not in found], spec, jobs, progress))
    return {p: found[p] for p in policies}


def _run_all(
    setup: SimSetup, policies: Sequence[str], spec: SearchSpec, jobs: int, progress: Progress | None
) -> dict[str, CapacityResult]:
    if len(policies) * 2 <= jobs:
        # Fewer policies than cores: each policy's search asks several QPS at once instead.
        prepared = prepare(setup)
        width = jobs // len(policies)
        with ProcessPoolExecutor(max_workers=width) as pool:
            return {p: policy_capacity(setup, prepared, p, spec, progress, pool=pool, width=width) for p in policies}
    jobs = min(jobs, len(policies))
    if jobs <= 1:
        prepared = prepare(setup)
        return {p: policy_capacity(setup, prepared, p, spec, progress) for p in policies}
    order = sorted(policies, key=lambda p: not POLICIES[p].needs_prediction)  # slow ones first
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_worker, setup, p, spec, progress) for p in order]
        return dict(f.result() for f in futures)
