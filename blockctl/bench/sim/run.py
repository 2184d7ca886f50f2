"""One simulated benchmark run: a setup, a workload, a policy and a QPS in; per-request records out."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from blockctl.bench.capacity import Slo
from blockctl.bench.metrics import RequestRecord
from blockctl.bench.results import RunResult
from blockctl.bench.sim.cluster import ClusterSim, SimRecord, simulate
from blockctl.bench.sim.lengths import held_out_workload, parse_lengths, predicted_dists, predicted_lengths
from blockctl.bench.steady import (
    WARMUP_FRACTION,
    AbortWindow,
    ProbeOutcome,
    evaluate,
    stopped,
    warmup_count,
    window_throughput,
)
from blockctl.bench.workloads import WorkItem, arrival_times, load_workload
from blockctl.engine.prefixcache import block_hashes
from blockctl.engine.profile import DEFAULT_PROFILE, Profile, load_profile
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig
from blockctl.errors import ConfigError
from blockctl.predict.lengths import LengthDist
from blockctl.scheduler.policies import make_policy


@dataclass(frozen=True, slots=True)
class SimSetup:
    """Everything but the policy and the QPS: the cluster, the engine settings, the workload, the lengths.

    Engine settings left None come from the profile's defaults (KV blocks implied by GPU memory).
    """

    instances: int = 12
    profile: str = DEFAULT_PROFILE  # one profile, or a mixed cluster: "NAME:COUNT,NAME:COUNT" (see profile_names)
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks: int | None = None
    workload: str = "sharegpt"
    requests: int = 1000
    arrival: str = "poisson"
    burstiness: float = 1.0
    lengths: str = "oracle"
    seed: int = 0
    noise: bool = True  # step-time noise from the profile's measured spread
    time_scale: float = 1.0  # trace arrivals only
    duration: float | None = None  # seconds of arrivals per run (then ``requests`` is not used)
    # vLLM's prefix caching (its default): on for workloads whose items carry token ids; a workload without
    # them shares no prefix, and its engines run without the cache, exactly as before it existed.
    prefix_caching: bool = True

    def validate(self) -> None:
        if self.instances < 1:
            raise ConfigError(f"must be at least 1, got {self.instances}", key="--instances")
        if self.requests < 1:
            raise ConfigError(f"must be at least 1, got {self.requests}", key="--requests")
        if self.duration is not None and not (self.duration > 0 and math.isfinite(self.duration)):
            raise ConfigError(f"must be a positive number of seconds, got {self.duration}", key="--duration")
        for key, value in (("--max-num-seqs", self.max_num_seqs),
                           ("--max-num-batched-tokens", self.max_num_batched_tokens),
                           ("--num-gpu-blocks", self.num_gpu_blocks)):
            if value is not None and value < 1:
                raise ConfigError(f"must be at least 1, got {value}", key=key)
        held_out_workload(self.workload, parse_lengths(self.lengths))
        self.profile_names()

    def profile_names(self) -> list[str]:
        """Each instance's profile, in instance order. ``--profile NAME`` gives every instance NAME; a mixed
        cluster lists ``NAME:COUNT`` parts, comma-separated, whose counts add up to ``--instances`` (e.g.
        ``h100/llama-2-7b:6,h200/llama-2-7b:6``: i0–i5 on H100, i6–i11 on H200)."""
        if "," not in self.profile and ":" not in self.profile:
            return [self.profile] * self.instances
        names: list[str] = []
        for part in self.profile.split(","):
            name, sep, count = part.strip().rpartition(":")
            if not sep or not name or not count.isdigit() or int(count) < 1:
                raise ConfigError(f"'{part}' is not NAME:COUNT (a mixed cluster lists NAME:COUNT parts, "
                                  "comma-separated)", key="--profile")
            names += [name] * int(count)
        if len(names) != self.instances:
            raise ConfigError(f"the counts add up to {len(names)} instances, but --instances is {self.instances}",
                              key="--profile")
        return names

    def requests_at(self, qps: float) -> int:
        """Requests in a run at ``qps``: enough for ``duration`` seconds of arrivals, else ``requests``."""
        if self.duration is None:
            return self.requests
        return max(2, math.ceil(self.duration * qps))

    def engine_config(self, profile: Profile) -> EngineConfig:
        base = profile.engine_defaults()
        overrides: dict[str, Any] = {k: v for k, v in (("max_num_seqs", self.max_num_seqs),
                                       ("max_num_batched_tokens", self.max_num_batched_tokens),
                                       ("num_gpu_blocks", self.num_gpu_blocks)) if v is not None}
        return dataclasses.replace(base, **overrides)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A setup's workload, loaded once and shared by every policy and QPS (same requests, same lengths)."""

    items: list[WorkItem]
    predicted: list[int]  # the output length the scheduler is told for each item
    profile: Profile
    config: EngineConfig
    lengths: list[LengthDist | None] | None = None  # ... and as a distribution (None: exactly ``predicted``)
    hashes: list[list[int] | None] | None = None  # block hashes per item when the engines cache prefixes
    # a mixed cluster: each instance's (engine config, step-time model); None: all run ``config``/``profile``
    engines: tuple[tuple[EngineConfig, StepTimeModel], ...] | None = None


@dataclass(slots=True)
class SimRun:
    """Records of one run; ``complete`` is False when the run stopped early because an SLO broke."""

    policy: str
    qps: float
    records: list[SimRecord]
    complete: bool
    wall_s: float
    duration_s: float  # virtual seconds from the first arrival to the last finish
    meta: dict[str, object] = field(default_factory=dict)


def prepare(setup: SimSetup, requests: int | None = None) -> Prepared:
    """The first ``requests`` (default ``setup.requests``) items of the setup's workload and their predicted
    lengths; a longer preparation starts with the same items and lengths (one seed, one sequence)."""
    setup.validate()
    spec = parse_lengths(setup.lengths)
    items = load_workload(held_out_workload(setup.workload, spec)[0], num_requests=requests or setup.requests,
                          seed=setup.seed)
    names = setup.profile_names()
    profile = _profile(names[0])
    config = setup.engine_config(profile)
    engines = None
    if len(set(names)) > 1:
        engines = tuple((setup.engine_config(_profile(n)), _profile(n).model) for n in names)
        if len({c.block_size for c, _ in engines}) > 1 or len({c.max_model_len for c, _ in engines}) > 1:
            raise ConfigError("a mixed cluster's profiles must agree on block size and max_model_len "
                              "(one workload is hashed and capped for all)", key="--profile")
    true = [i.output_tokens for i in items]
    histories = [i.replies for i in items]
    predicted = predicted_lengths(spec, true, [i.prompt for i in items], seed=setup.seed + 7919, histories=histories)
    hashes = None
    if setup.prefix_caching and any(i.token_ids is not None for i in items):
        config = dataclasses.replace(config, enable_prefix_caching=True)
        if engines is not None:
            engines = tuple((dataclasses.replace(c, enable_prefix_caching=True), m) for c, m in engines)
        bs = config.block_size
        hashes = [None if i.token_ids is None else block_hashes(list(i.token_ids), bs) for i in items]
    prompts = [i.prompt for i in items]
    dists = predicted_dists(spec, predicted, prompts, true_lengths=true, seed=setup.seed + 7919, histories=histories)
    return Prepared(items, predicted, profile, config, dists, hashes, engines)


@lru_cache(maxsize=8)
def _profile(name: str) -> Profile:
    return load_profile(name)


def arrivals_for(setup: SimSetup, items: Sequence[WorkItem], qps: float) -> list[float]:
    """Send times at ``qps``; with one seed, Poisson/gamma times at another QPS are the same draws scaled."""
    stamps = [i.timestamp for i in items] if setup.arrival == "trace" else None
    return [float(t) for t in arrival_times(setup.arrival, len(items), qps=qps, burstiness=setup.burstiness,
                                             seed=setup.seed, timestamps=stamps, time_scale=setup.time_scale)]


_GROWN: dict[SimSetup, Prepared] = {}


def prepared_for(setup: SimSetup, requests: int) -> Prepared:
    """A preparation of at least ``requests`` items, kept per process and grown (by half again) when short."""
    have = _GROWN.get(setup)
    if have is None or len(have.items) < requests:
        size = requests if have is None else max(requests, len(have.items) * 3 // 2)
        _GROWN[setup] = have = prepare(setup, size)
    return have


def run_policy(
    setup: SimSetup, prepared: Prepared, policy: str, qps: float,
    *, abort: Slo | Sequence[AbortWindow] | None = None,
) -> SimRun:
    """Simulate ``policy`` at ``qps`` over the first ``setup.requests_at(qps)`` prepared requests (stopping
    early once ``abort`` breaks); a preparation too short for them is grown first."""
    n = setup.requests_at(qps)
    if len(prepared.items) < n:
        prepared = prepared_for(setup, n)
    items = prepared.items[:n]
    arrivals = arrivals_for(setup, items, qps)
    sim = ClusterSim(
        setup.instances, prepared.config, prepared.profile.model, make_policy(policy),
        seed=setup.seed, noise=None if setup.noise else 0.0, engines=prepared.engines,
    )
    start = time.perf_counter()
    complete = simulate(
        sim, [i.prompt_tokens for i in items], [i.output_tokens for i in items], prepared.predicted[:n], arrivals,
        abort=abort, lengths=None if prepared.lengths is None else prepared.lengths[:n],
        hashes=None if prepared.hashes is None else prepared.hashes[:n],
    )
    wall = time.perf_counter() - start
    ends = [r.finish_time for r in sim.records if r.finish_time is not None]
    duration = (max(ends) - arrivals[0]) if ends and arrivals else 0.0
    meta: dict[str, object] = {}
    if prepared.config.enable_prefix_caching:
        meta["prefix_cache_queries"], meta["prefix_cache_hits"] = sim.prefix_cache_counts()
    return SimRun(policy, qps, sim.records, complete, wall, duration, meta)


def slo_samples(run: SimRun, metric: str) -> list[float]:
    """Per-request values of ``metric`` (ttft | e2e | tpot); failed or unfinished requests count as inf."""
    out: list[float] = []
    for r in run.records:
        if metric == "ttft":
            v = r.ttft
        elif metric == "e2e":
            v = r.e2e
        else:
            v = None
            if r.first_token_time is not None and r.finish_time is not None:
                gaps = max(1, r.output_tokens - 1)
                v = (r.finish_time - r.first_token_time) / gaps
        out.append(math.inf if v is None else v)
    return out


def judge(run: SimRun, slos: Sequence[Slo], *, warmup: float = WARMUP_FRACTION) -> ProbeOutcome:
    """The run as a steady-state probe (:mod:`blockctl.bench.steady`): stable, and every SLO held after
    warm-up and over the last third; a run stopped early is a break with nothing measured."""
    if not run.complete:
        return stopped(run.qps, len(run.records), slos)
    return evaluate(run.qps, [r.arrival for r in run.records], [r.finish_time for r in run.records],
                    {s: slo_samples(run, s.metric) for s in slos}, warmup=warmup)


def steady_summary(run: SimRun) -> dict[str, object]:
    """The run judged as steady state: arrival and completion rates after warm-up, whether it kept up, and
    P50/P99 TTFT and E2E over the requests after warm-up (the first ``WARMUP_FRACTION`` left out)."""
    recs = run.records
    tp = window_throughput([r.arrival for r in recs], [r.finish_time for r in recs])
    w = warmup_count(len(recs))
    out: dict[str, object] = {"offered_rps": tp.offered_rps, "completed_rps": tp.completed_rps,
                              "stable": tp.stable, "warmup_requests": w}
    for metric in ("ttft", "e2e"):
        xs = slo_samples(run, metric)[w:]
        for stat in ("p50", "p99"):
            v = Slo(metric, stat, 1.0).value(xs)
            out[f"{metric}_{stat}_s"] = "inf" if math.isinf(v) else v
    return out


def to_records(run: SimRun) -> list[RequestRecord]:
    """Records in ``bench run``'s schema (no ITL: the simulator does not keep per-token times)."""
    out: list[RequestRecord] = []
    for r in run.records:
        error = r.error
        if error is None and r.finish_time is None:
            error = "not finished: the run stopped early (SLO already broken)"
        out.append(RequestRecord(
            index=r.index,
            prompt_tokens=r.prompt_tokens,
            output_tokens=r.output_tokens if r.finish_time is not None else 0,
            expected_output_tokens=r.output_tokens,
            scheduled_s=r.arrival,
            sent_s=r.arrival,
            ttft_s=r.ttft,
            e2e_s=r.e2e,
            instance=r.instance,
            predicted_e2e_s=r.predicted_e2e_s,
            predicted_output_tokens=r.predicted_output_tokens,
            error=error,
        ))
    return out


def to_result(setup: SimSetup, prepared: Prepared, run: SimRun, *, label: str | None = None) -> RunResult:
    """A ``bench run``-style result (kind "sim") whose config says everything needed to rerun it."""
    config = {
        **{k: getattr(setup, k) for k in setup.__dataclass_fields__},
        "requests": len(run.records),
        "workload_used": held_out_workload(setup.workload, parse_lengths(setup.lengths))[0],
        "policy": run.policy,
        "qps": run.qps,
        "engine": dataclasses.asdict(prepared.config),
        "complete": run.complete,
        "wall_s": round(run.wall_s, 3),
        "steady": steady_summary(run),
    }
    result = RunResult.build(label or run.policy, "sim", config, to_records(run), duration_s=run.duration_s)
    queries, hits = run.meta.get("prefix_cache_queries"), run.meta.get("prefix_cache_hits")
    if isinstance(queries, int) and isinstance(hits, int) and queries:
        result.summary = dataclasses.replace(result.summary, prefix_cache_hit_rate=hits / queries)
    return result
