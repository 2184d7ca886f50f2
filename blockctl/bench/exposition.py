"""What /metrics costs: rendering the emulator's, the agent's and the scheduler's exposition, and the agent's
parse of an engine's, each timed in-process over many calls on realistic state (filled histograms, a
dozen in-flight requests, a handful of instances). The agent parses its engine's /metrics every
``scrape_interval_s`` (0.5 s by default), so its parse cost is paid twice a second per instance.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from blockctl.engine.profile import DEFAULT_PROFILE, load_profile


@dataclass(frozen=True, slots=True)
class Cost:
    what: str
    us_per_call: float  # median of the rounds
    calls: int
    text_bytes: int


def _time(fn: Callable[[], Any], calls: int, rounds: int = 5) -> float:
    fn()
    per: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(per)[len(per) // 2]


def _emulator_state() -> tuple[Any, Any]:
    from blockctl_agents.emulator.metrics import EngineGauges, EngineMetrics

    rng = random.Random(0)
    m = EngineMetrics(steps=12345, step_seconds=321.5, prompt_tokens=987654, generation_tokens=123456)
    for _ in range(2000):
        m.ttft.observe(rng.expovariate(5))
        m.itl.observe(rng.expovariate(40))
        m.e2e.observe(rng.expovariate(0.2))
        m.queue.observe(rng.expovariate(10))
        m.iteration_tokens.observe(rng.randint(1, 8192))
    m.success["stop"], m.success["length"] = 1800, 200
    return m, EngineGauges(running=12, waiting=3, kv_usage=0.42, preemptions=7, block_size=16, num_gpu_blocks=8000)


def measure(calls: int = 2000) -> list[Cost]:
    from blockctl.predict.tracker import Tracked
    from blockctl.scheduler.metrics import SchedulerMetrics
    from blockctl_agents.emulator import metrics as emulator_metrics
    from blockctl_agents.predictor.core import AgentCore
    from blockctl_agents.predictor.metrics import render_metrics
    from blockctl_agents.predictor.observe import parse_metrics
    from blockctl_agents.predictor.settings import AgentSettings

    m, g = _emulator_state()
    emu_text = emulator_metrics.render("llama-2-7b", m, g)
    profile = load_profile(DEFAULT_PROFILE)
    core = AgentCore(AgentSettings("http://127.0.0.1:1", "gpu-0", profile.name, profile.engine_defaults()),
                     profile.model)
    now = 1000.0
    for i in range(12):
        t = Tracked(f"r{i}", now - 5 + i * 0.1, 300, 200, stream=True)
        t.produced, t.first_token_at, t.last_token_at = 50, now - 2, now - 0.01
        core.tracker.add(t)
    for i in range(300):
        core.errors.ttft.observe(0.1 + i % 7 * 0.01, 0.1)
        core.errors.e2e.observe(2.0 + i % 5 * 0.1, 2.1)
    agent_text = render_metrics(core, now)
    sched = SchedulerMetrics("block")
    for i in range(8):
        sched.routed[f"gpu-{i}"] = 1000 + i
        sched.agent_errors[f"gpu-{i}"] = i
    sched.requests["forwarded"], sched.requests["bad_request"] = 8000, 12
    sched.length_sources["tagger"] = 8000
    for i in range(500):
        sched.routing_seconds.observe(0.0005 + i * 1e-5)
    sched_text = sched.render(8)
    return [
        Cost("emulator /metrics render", _time(lambda: emulator_metrics.render("llama-2-7b", m, g), calls),
             calls, len(emu_text.encode())),
        Cost("agent parse of the engine's /metrics", _time(lambda: parse_metrics(emu_text, now), calls),
             calls, len(emu_text.encode())),
        Cost("agent /metrics render", _time(lambda: render_metrics(core, now), calls // 4), calls // 4,
             len(agent_text.encode())),
        Cost("scheduler /metrics render", _time(lambda: sched.render(8), calls), calls, len(sched_text.encode())),
    ]


def as_dicts(costs: list[Cost]) -> list[dict[str, Any]]:
    return [asdict(c) for c in costs]
