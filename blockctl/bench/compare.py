"""Compare routing policies on one workload and seed: in simulation, or live by restarting the schedulers."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockctl.bench.loadgen import LoadSpec, run_live, send_schedule
from blockctl.bench.plots import plot_cdfs, plot_vs_qps
from blockctl.bench.results import RunResult, save_results
from blockctl.bench.sim.run import SimSetup, prepare, run_policy, to_result
from blockctl.bench.workers import worker_pool
from blockctl.bench.workloads import parse_arrival, read_workload
from blockctl.errors import ConfigError
from blockctl.scheduler.policies import POLICIES, make_policy

Progress = Callable[[str], None]


@dataclass(slots=True)
class Comparison:
    """Results per QPS, one per policy in the order asked (the same workload and seed in every run)."""

    policies: list[str]
    runs: dict[float, list[RunResult]] = field(default_factory=dict)

    def series(self) -> dict[str, list[tuple[float, Any]]]:
        """Per policy, its (qps, summary) points, for :func:`plot_vs_qps`."""
        return {p: [(q, rs[i].summary) for q, rs in sorted(self.runs.items())]
                for i, p in enumerate(self.policies)}


def parse_policies(spec: str) -> list[str]:
    names = [p.strip() for p in spec.split(",") if p.strip()]
    if not names:
        raise ConfigError("no policy given", key="--policies")
    for name in names:
        if name not in POLICIES:
            raise ConfigError(f"unknown policy '{name}'; valid: {', '.join(POLICIES)}", key="--policies")
    if len(set(names)) != len(names):
        raise ConfigError("a policy is listed twice", key="--policies")
    return names


def parse_qps(spec: str) -> list[float]:
    try:
        values = sorted({float(q) for q in spec.split(",") if q.strip()})
    except ValueError:
        raise ConfigError(f"'{spec}': expected comma-separated numbers", key="--qps") from None
    if not values or any(not q > 0 for q in values):
        raise ConfigError(f"'{spec}': every QPS must be > 0", key="--qps")
    return values


def _sim_one(setup: SimSetup, policy: str, qps: float) -> RunResult:
    prepared = prepare(setup)
    return to_result(setup, prepared, run_policy(setup, prepared, policy, qps))


def compare_sim(
    setup: SimSetup, policies: Sequence[str], qps: Sequence[float], *, jobs: int | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Every (policy, QPS) pair simulated, in ``jobs`` processes (default: one per CPU core)."""
    for p in policies:
        make_policy(p)
    prepare(setup)  # validate and warm the workload cache before any fork
    tasks = [(p, q) for q in qps for p in policies]
    jobs = max(1, min(len(tasks), jobs if jobs is not None else (os.cpu_count() or 1)))
    done: dict[tuple[str, float], RunResult] = {}
    if jobs == 1:
        for p, q in tasks:
            done[(p, q)] = _sim_one(setup, p, q)
            if progress:
                progress(f"{p} at {q:g} QPS: {done[(p, q)].config['wall_s']:.1f} s")
    else:
        # Predictive policies are the slow ones: start them first so the pool ends evenly.
        order = sorted(tasks, key=lambda t: not POLICIES[t[0]].needs_prediction)
        with worker_pool(jobs) as pool:
            futures = {t: pool.submit(_sim_one, setup, *t) for t in order}
            for t, fut in futures.items():
                done[t] = fut.result()
                if progress:
                    progress(f"{t[0]} at {t[1]:g} QPS: {done[t].config['wall_s']:.1f} s")
    return Comparison(list(policies), {q: [done[(p, q)] for p in policies] for q in qps})


@dataclass(frozen=True, slots=True)
class LiveSetup:
    """Live: the workload goes to ``endpoint`` while the cluster at ``state_dir`` runs each policy."""

    endpoint: str
    state_dir: Path
    workload: str = "sharegpt"
    requests: int = 200
    arrival: str = "poisson"
    seed: int = 0
    timeout_s: float = 600.0
    lengths: str = "none"  # what the load generator tells about reply lengths (blockctl.bench.wire LENGTH_MODES)
    duration: float | None = None  # seconds of arrivals per run (then ``requests`` is not used)

    def requests_at(self, qps: float) -> int:
        return self.requests if self.duration is None else max(2, math.ceil(self.duration * qps))


def live_probe(live: LiveSetup, policy: str, qps: float) -> RunResult:
    """One live run of the workload at ``qps`` against the endpoint (its schedulers already run ``policy``)."""
    arrival = parse_arrival(live.arrival)
    n = live.requests_at(qps)
    loaded = read_workload(live.workload, num_requests=n, seed=live.seed)
    spec = LoadSpec(endpoint=live.endpoint, model="", concurrency=arrival.concurrency,
                    request_timeout_s=live.timeout_s, seed=live.seed, lengths=live.lengths)
    times = send_schedule(loaded.items, arrival, qps, live.seed)
    config = {"workload": live.workload, "requests": n, "qps": qps, "arrival": live.arrival,
              "seed": live.seed, "policy": policy, "lengths": live.lengths, "workload_notes": loaded.notes}
    return asyncio.run(run_live(loaded.items, times, spec, label=policy, config=config))


def compare_live(
    live: LiveSetup, policies: Sequence[str], qps: Sequence[float], *, progress: Progress | None = None,
    restart: Callable[[Path, str], Any] | None = None,
) -> Comparison:
    """For each policy: restart the cluster's schedulers with it, then send the same workload at each QPS.

    ``restart`` defaults to :func:`blockctl.cluster.schedulers.restart_schedulers`.
    """
    if restart is None:
        from blockctl.cluster.schedulers import restart_schedulers

        restart = restart_schedulers
    for p in policies:
        make_policy(p)
    parse_arrival(live.arrival)
    runs: dict[float, list[RunResult]] = {q: [] for q in qps}
    for p in policies:
        if progress:
            progress(f"restarting the schedulers with policy {p}")
        restart(live.state_dir, p)
        for q in qps:
            if progress:
                progress(f"{p} at {q:g} QPS: sending {live.requests_at(q)} requests")
            runs[q].append(live_probe(live, p, q))
    return Comparison(list(policies), runs)


def write_outputs(cmp: Comparison, out_dir: Path) -> list[Path]:
    """Per run a JSON results file; per QPS a TTFT/E2E CDF plot; with several QPS, P99 TTFT/E2E vs QPS."""
    written: list[Path] = []
    for q, results in sorted(cmp.runs.items()):
        for r in results:
            written.append(save_results(out_dir / f"{r.label}-qps{q:g}.json", r))
        written.append(plot_cdfs(results, out_dir / f"cdf-qps{q:g}.png"))
    if len(cmp.runs) > 1:
        written.append(plot_vs_qps(cmp.series(), out_dir / "p99-vs-qps.png"))
    return written
