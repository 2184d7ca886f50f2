"""Speed of the engine model itself: exact steps/s, fast-forward throughput, what-if latency.

Times are taken with ``clock``: the process's CPU time by default (robust on a shared machine: time spent
descheduled does not count), or ``time.perf_counter`` for wall clock.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from blockctl.engine.core import Engine
from blockctl.engine.profile import Profile
from blockctl.engine.types import EngineConfig, Phase, Request
from blockctl.engine.whatif import predict, predict_exact

# ShareGPT-like lengths (lognormal; medians ~150 prompt / ~200 output tokens, long tails), capped at 2k each.
PROMPT_MU, PROMPT_SIGMA = 5.0, 1.0
OUTPUT_MU, OUTPUT_SIGMA = 5.3, 0.9


def _length(rng: random.Random, mu: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, int(rng.lognormvariate(mu, sigma))))


def sample_request(rng: random.Random, name: str, cap: int = 2000) -> Request:
    return Request(name, _length(rng, PROMPT_MU, PROMPT_SIGMA, cap), _length(rng, OUTPUT_MU, OUTPUT_SIGMA, cap))


def decoding_state(rng: random.Random, running: int, waiting: int) -> tuple[list[Request], list[Request]]:
    """An instance mid-flight: ``running`` requests part-way through their outputs, ``waiting`` queued."""
    run = []
    for i in range(running):
        r = sample_request(rng, f"r{i}")
        produced = rng.randint(1, r.output_tokens)
        r.output_tokens += 1  # at least one token still to come
        r.num_output_tokens = produced
        r.num_computed_tokens = r.prompt_tokens + produced - 1
        r.phase = Phase.RUNNING
        run.append(r)
    return run, [sample_request(rng, f"w{i}") for i in range(waiting)]


@dataclass(frozen=True, slots=True)
class EngineSpeed:
    running: int
    waiting: int
    steps_per_s: float  # exact Engine.step() with `running` decoding requests
    emulated_step_ms: float  # the model's time of one of those steps
    ff_tokens_per_s: float  # generated tokens per second spent, run_until over an arrival stream
    ff_sim_speedup: float  # simulated seconds per second spent, same run
    stepwise_tokens_per_s: float  # the same stream with fast-forward off
    predict_p50_us: float
    predict_p99_us: float
    predict_exact_p50_us: float


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def exact_steps(
    config: EngineConfig, profile: Profile, running: int, seconds: float, clock: Callable[[], float]
) -> tuple[float, float]:
    """Exact decode steps of ``running`` requests: (steps per wall second, emulated ms per step)."""
    rng = random.Random(1)
    steps, emulated, busy = 0, 0.0, 0.0
    while busy < seconds:
        eng = Engine(config, profile.model)
        for r in decoding_state(rng, running, 0)[0]:
            r.output_tokens = r.num_output_tokens + 200  # none finishes within the 100 timed steps
            if r.prompt_tokens + r.output_tokens <= config.max_model_len:
                eng.restore(r)
        start = clock()
        for _ in range(100):
            res = eng.step()
            assert res is not None
            emulated += res.duration
        busy += clock() - start
        steps += 100
    return steps / busy, 1e3 * emulated / steps


def stream(
    config: EngineConfig, profile: Profile, n: int, fast: bool, running: int, clock: Callable[[], float]
) -> tuple[int, float, float]:
    """Poisson arrivals at the rate that keeps about ``running`` requests in flight; (tokens, sim s, wall s)."""
    rng = random.Random(2)
    reqs = [sample_request(rng, f"q{i}") for i in range(n)]
    step_s = profile.model.step_seconds(profile.rows[0].shape())
    mean_out = sum(r.output_tokens for r in reqs) / n
    qps = running / (mean_out * step_s * 1.6)
    eng = Engine(config, profile.model)
    eng.fast_forward = fast
    t = 0.0
    start = clock()
    for r in reqs:
        t += rng.expovariate(qps)
        eng.run_until(t)
        eng.add(r)
    eng.run_until(math.inf)
    wall = clock() - start
    last = max(r.finish_time or 0.0 for r in reqs)
    return sum(r.output_tokens for r in reqs), last, wall


def predict_latency(
    config: EngineConfig, profile: Profile, running: int, waiting: int, n: int,
    fn: Callable[..., object] = predict, clock: Callable[[], float] = time.process_time, prefix_hit: float = 0.0,
) -> list[float]:
    """What-if latencies (µs); ``prefix_hit``: the fraction of each waiting and new prompt the instance's prefix
    cache holds (whole blocks), as an agent with a shadow cache hands the what-if."""
    rng = random.Random(3)
    states = [decoding_state(rng, running, waiting) for _ in range(50)]
    news = [sample_request(rng, f"n{i}") for i in range(50)]
    if prefix_hit > 0:
        bs = config.block_size
        for r in [*news, *(w for _, ws in states for w in ws)]:
            r.prefix_hit = int(r.prompt_tokens * prefix_hit) // bs * bs
    out = []
    for i in range(n):
        run, wait = states[i % 50]
        t0 = clock()
        fn(config, profile.model, run, wait, news[i % 50])
        out.append((clock() - t0) * 1e6)
    return out


def measure(profile: Profile, *, running: int = 48, waiting: int = 32, requests: int = 3000,
            predicts: int = 2000, seconds: float = 1.0, wall: bool = False, prefix_hit: float = 0.0) -> EngineSpeed:
    config = profile.engine_defaults()
    if prefix_hit > 0:  # the engine runs with vLLM's prefix cache on (requests carry no shared hashes)
        config = dataclasses.replace(config, enable_prefix_caching=True)
    clock = time.perf_counter if wall else time.process_time
    steps_per_s, step_ms = exact_steps(config, profile, running, seconds, clock)
    tokens, sim_s, spent = stream(config, profile, requests, True, running, clock)
    tokens_slow, _, spent_slow = stream(config, profile, max(200, requests // 5), False, running, clock)
    lat = predict_latency(config, profile, running, waiting, predicts, clock=clock, prefix_hit=prefix_hit)
    lat_exact = predict_latency(config, profile, running, waiting, max(50, predicts // 20), predict_exact, clock)
    return EngineSpeed(
        running=running, waiting=waiting, steps_per_s=steps_per_s, emulated_step_ms=step_ms,
        ff_tokens_per_s=tokens / spent, ff_sim_speedup=sim_s / spent, stepwise_tokens_per_s=tokens_slow / spent_slow,
        predict_p50_us=_quantile(lat, 0.5), predict_p99_us=_quantile(lat, 0.99),
        predict_exact_p50_us=_quantile(lat_exact, 0.5),
    )
