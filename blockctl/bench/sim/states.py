"""What-if speed where it is hardest: instance states sampled from a saturated cluster simulation.

A cluster is simulated offered more than it can take, so that queues grow and the KV cache runs short. At
arrivals after warm-up, an instance whose agent view holds ``running`` running and at least ``waiting``
waiting requests is sampled: its view (the first ``waiting`` waiting) and the arriving request make one
what-if. Each state is then timed through :func:`blockctl.engine.whatif.predict`, and replayed in the exact
engine to tell whether the new request meets a preemption before it finishes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from blockctl.bench.sim.cluster import ClusterSim
from blockctl.bench.sim.run import SimSetup, arrivals_for, prepared_for
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Request
from blockctl.engine.whatif import predict, restore_state
from blockctl.errors import ConfigError
from blockctl.scheduler.policies import make_policy

State = tuple[list[Request], list[Request], Request]  # (running, waiting, new)


def saturated_states(
    setup: SimSetup, qps: float, count: int, *, running: int, waiting: int, policy: str = "round-robin",
    warmup_s: float = 20.0,
) -> list[State]:
    """Up to ``count`` states (see module docstring) from ``setup`` simulated at ``qps`` under ``policy``."""
    prepared = prepared_for(setup, setup.requests_at(qps))
    items = prepared.items[: setup.requests_at(qps)]
    arrivals = arrivals_for(setup, items, qps)
    sim = ClusterSim(setup.instances, prepared.config, prepared.profile.model, make_policy(policy), seed=setup.seed)
    rng = random.Random(setup.seed + 17)
    out: list[State] = []
    for i, t in enumerate(arrivals):
        sim.advance(t)
        item = items[i]
        if t >= warmup_s and len(out) < count:
            run, wait = sim.agent_queues(rng.choice(sim.names))
            if len(run) >= running and len(wait) >= waiting:
                cap = max(1, prepared.config.max_model_len - item.prompt_tokens)
                new = Request("new", item.prompt_tokens, min(prepared.predicted[i], cap))
                out.append((run[:running], wait[:waiting], new))
        sim.dispatch(i, t, item.prompt_tokens, item.output_tokens, prepared.predicted[i])
        if len(out) >= count:
            break
    return out


def preempts(config: EngineConfig, state: State, model: StepTimeModel) -> bool:
    """Whether the exact engine preempts anything before the state's new request finishes."""
    run, wait, new = state
    eng = restore_state(config, model, run, wait)
    target = Request("t", new.prompt_tokens, new.output_tokens)
    eng.add(target)
    eng.run_until_finished(target)
    return eng.num_preemptions_total > 0


@dataclass(frozen=True, slots=True)
class StateSpeed:
    states: int
    preempting: int  # states whose what-if meets a preemption
    p50_us: float
    p99_us: float
    mean_us: float
    preempting_p50_us: float | None
    preempting_p99_us: float | None


def time_states(setup: SimSetup, states: list[State], *, repeats: int = 3) -> StateSpeed:
    """CPU µs per ``predict`` over ``states`` (each the best of ``repeats`` runs: the machine may be shared)."""
    if not states:
        raise ConfigError("no saturated state with that many running and waiting requests was found",
                          key="--states", hint="lower --running / --waiting or raise --saturation-qps")
    prepared = prepared_for(setup, 2)
    cfg, model = prepared.config, prepared.profile.model
    times: list[float] = []
    flags: list[bool] = []
    for run, wait, new in states:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            predict(cfg, model, run, wait, new)
            best = min(best, time.process_time() - t0)
        times.append(best * 1e6)
        flags.append(preempts(cfg, (run, wait, new), model))
    arr = np.array(times)
    pre = arr[np.array(flags)]
    return StateSpeed(
        states=len(states), preempting=int(sum(flags)),
        p50_us=float(np.percentile(arr, 50)), p99_us=float(np.percentile(arr, 99)), mean_us=float(arr.mean()),
        preempting_p50_us=float(np.percentile(pre, 50)) if len(pre) else None,
        preempting_p99_us=float(np.percentile(pre, 99)) if len(pre) else None,
    )
