"""Capacity of each policy in simulation: bisection over QPS, one worker process per policy."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from blockctl.bench.capacity import CapacityResult, Slo, bisect_capacity
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
    start: float | None = None  # default: 1 QPS per instance
    max_qps: float = 10_000.0


def policy_capacity(
    setup: SimSetup, prepared: Prepared, policy: str, spec: SearchSpec, progress: Progress | None = None
) -> CapacityResult:
    """Highest QPS at which every SLO of ``spec`` holds for ``policy`` (runs stop early once one breaks)."""
    abort = next((s for s in spec.slos if s.metric in ("ttft", "e2e") and s.quantile is not None), None)

    def holds(qps: float) -> bool:
        run: SimRun = run_policy(setup, prepared, policy, qps, abort=abort)
        ok = slos_hold(run, spec.slos)
        if progress is not None:
            progress(policy, qps, ok)
        return ok

    start = spec.start if spec.start is not None else float(setup.instances)
    return bisect_capacity(holds, start=start, resolution=spec.resolution, max_qps=spec.max_qps,
                           rel_resolution=spec.rel_resolution)


def _worker(setup: SimSetup, policy: str, spec: SearchSpec) -> tuple[str, CapacityResult]:
    return policy, policy_capacity(setup, prepare(setup), policy, spec)


def capacities(
    setup: SimSetup,
    policies: Sequence[str],
    spec: SearchSpec,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> dict[str, CapacityResult]:
    """Capacity per policy, in the order given. ``jobs`` > 1 runs policies in that many processes
    (predictive policies, the slow ones, are started first); ``progress`` is only called when jobs == 1.
    """
    for name in policies:
        make_policy(name)  # unknown names fail before any work
    jobs = min(len(policies), jobs if jobs is not None else (os.cpu_count() or 1))
    if jobs <= 1:
        prepared = prepare(setup)
        return {p: policy_capacity(setup, prepared, p, spec, progress) for p in policies}
    prepare(setup)  # validate and warm the workload cache once, before forking
    order = sorted(policies, key=lambda p: not POLICIES[p].needs_prediction)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_worker, setup, p, spec) for p in order]
        found = dict(f.result() for f in futures)
    return {p: found[p] for p in policies}
