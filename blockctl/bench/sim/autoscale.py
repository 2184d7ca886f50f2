"""Autoscaling in virtual time: a phased trace through a ScalableSim whose size a scale policy decides.

Every ``interval_s`` the loop builds an :class:`Observation` from what a controller could know (arrivals it
routed, first tokens that came back, the agents' queues with *predicted* lengths), asks the policy, and
carries the decision out: a scale-up launches instances that serve ``startup_s`` later (they cost from
launch); a scale-down retires the least-loaded serving instances, which stop costing once idle.
``fixed`` runs (no policy) keep ``initial`` instances throughout.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from blockctl.bench.sim.autoscale_cluster import ScalableSim
from blockctl.bench.sim.cluster import SimRecord
from blockctl.bench.sim.run import Prepared
from blockctl.cluster import scaler
from blockctl.cluster.projection import Load, project_ttft
from blockctl.cluster.scaler import AutoscaleConfig, Observation, ScaleDecision, make_scale_policy, projections
from blockctl.scheduler.policies import make_policy


@dataclass(frozen=True, slots=True)
class Tick:
    t: float
    serving: int
    starting: int
    decision: ScaleDecision | None


@dataclass(slots=True)
class AutoscaleRun:
    label: str
    records: list[SimRecord]
    ticks: list[Tick]
    lifetimes: dict[str, tuple[float, float]]  # instance -> (launched, stopped) in virtual seconds
    ready_at: dict[str, float] = field(default_factory=dict)  # instance -> when it began serving

    def instance_seconds(self) -> float:
        return sum(b - a for a, b in self.lifetimes.values())


def run_autoscaled(
    prepared: Prepared,
    arrivals: Sequence[float],
    *,
    label: str,
    routing: str = "block",
    scale: AutoscaleConfig | None,
    initial: int,
    seed: int = 0,
    noise: bool = True,
) -> AutoscaleRun:
    """Simulate the trace; ``scale`` None keeps ``initial`` instances (the fixed baseline)."""
    items, predicted = prepared.items, prepared.predicted
    sim = ScalableSim(initial, prepared.config, prepared.profile.model, make_policy(routing), seed=seed,
                      noise=None if noise else 0.0)
    lifetimes: dict[str, list[float]] = {n: [0.0, math.inf] for n in sim.names}
    ready_at = {n: 0.0 for n in sim.names}
    pending: list[float] = []  # ready times of launched instances
    ticks: list[Tick] = []
    policy = make_scale_policy(scale) if scale is not None else None
    interval = scale.interval_s if scale is not None else 5.0
    window = scale.window_s if scale is not None else 30.0
    recent: deque[tuple[float, int, int]] = deque()  # (arrival, prompt, predicted) within the window
    firsts: deque[tuple[float, float]] = deque()  # (first token time, ttft)
    seen_first: set[int] = set()
    last_up: float | None = None
    last_down: float | None = None
    next_tick = interval
    i = 0
    n = len(arrivals)

    def activate(t: float) -> None:
        while pending and pending[0] <= t:
            at = pending.pop(0)
            name = sim.add_instance(at)
            lifetimes[name] = [at - (scale.startup_s if scale else 0.0), math.inf]
            ready_at[name] = at

    def settle(t: float) -> None:
        for name in list(sim.retired):
            if not sim.busy(name) and lifetimes[name][1] == math.inf:
                lifetimes[name][1] = max(lifetimes[name][0], min(t, sim.last_finish(name)))

    while i < n or (policy is not None and next_tick <= arrivals[-1]):
        if i < n and arrivals[i] < next_tick:
            t = arrivals[i]
            activate(t)
            sim.advance(t)
            sim.dispatch(i, t, items[i].prompt_tokens, items[i].output_tokens, predicted[i],
                         None if prepared.lengths is None else prepared.lengths[i])
            recent.append((t, items[i].prompt_tokens, predicted[i]))
            i += 1
            continue
        t = next_tick
        next_tick += interval
        activate(t)
        sim.advance(t)
        settle(t)
        if policy is None or scale is None:
            ticks.append(Tick(t, len(sim.names), 0, None))
            continue
        _collect_firsts(sim.records, seen_first, firsts)
        while recent and recent[0][0] <= t - window:
            recent.popleft()
        while firsts and firsts[0][0] <= t - window:
            firsts.popleft()
        obs = _observe(sim, scale, t, recent, firsts, pending, last_up, last_down)
        decision = policy.decide(obs)
        ticks.append(Tick(t, len(sim.names), len(pending), decision))
        if decision.action == "up":
            pending.extend([t + scale.startup_s] * (decision.target - obs.current))
            pending.sort()
            last_up = t
        elif decision.action == "down":
            drop = obs.current - decision.target
            while drop and pending:
                pending.pop()
                drop -= 1
            for name in sorted(sim.names, key=sim.load)[:drop]:
                sim.retire(name)
            last_down = t
    sim.drain()
    end = max((r.finish_time for r in sim.records if r.finish_time is not None), default=arrivals[-1])
    settle(end)
    spans = {k: (a, end if b == math.inf else b) for k, (a, b) in lifetimes.items()}
    return AutoscaleRun(label, sim.records, ticks, spans, ready_at)


def _collect_firsts(records: list[SimRecord], seen: set[int], firsts: deque[tuple[float, float]]) -> None:
    fresh = []
    for r in records:
        if r.index not in seen and r.first_token_time is not None and r.ttft is not None:
            seen.add(r.index)
            fresh.append((r.first_token_time, r.ttft))
    fresh.sort()
    firsts.extend(fresh)


def _observe(
    sim: ScalableSim,
    cfg: AutoscaleConfig,
    t: float,
    recent: deque[tuple[float, int, int]],
    firsts: deque[tuple[float, float]],
    pending: list[float],
    last_up: float | None,
    last_down: float | None,
) -> Observation:
    span = min(cfg.window_s, t)
    rate = len(recent) / span if span > 0 else 0.0
    half = span / 2
    early = sum(1 for a, _, _ in recent if a <= t - half)
    # a trend needs a full window: over a few seconds the arrival count is mostly noise
    slope = ((len(recent) - early) - early) / half / half if span >= cfg.window_s else 0.0
    proj: dict[int, float] = {}
    current = len(sim.names) + len(pending)
    inflight, waiting = sim.first_tokens(t)  # finished requests' first tokens are in ``firsts``
    if cfg.policy == "predictive":
        load = Load(rate, [(p, o) for _, p, o in recent], slope=max(0.0, slope), margin=cfg.rate_margin)
        queues = [sim.queues(name) for name in sim.names]
        starting = [p - t for p in pending]
        config, model = sim.config, sim.model
        proj = projections(lambda k, m: project_ttft(config, model, queues, k, replace(load, margin=m),
                                                     startup_s=cfg.startup_s,
                                                  horizon_s=cfg.horizon_s, starting=starting,
                                                  give_up_above=2 * cfg.target_ttft_s), current, cfg)
    return Observation(
        now=t, ready=len(sim.names), starting=len(pending), waiting=sum(sim.waiting(nm) for nm in sim.names),
        arrival_rate=rate, projected_ttft_s=proj,
        ttft_p99_s=scaler.observed_ttft_p99([*firsts, *inflight], waiting, now=t, window_s=cfg.window_s),
        last_up_s=last_up, last_down_s=last_down,
    )
