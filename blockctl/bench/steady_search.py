"""One policy's steady-state capacity: its saturation throughput first, then the highest QPS that holds.

1. Saturation: offer more than the policy can take (``overload`` × a hint, or from ``start`` upwards by half
   again until the probe is clearly overloaded) and measure what it completes per second over the second half
   of its arrivals (``SATURATION_WARMUP``).
2. Capacity: bracket then bisect (:func:`~blockctl.bench.capacity.search_capacity`) below the saturation
   throughput; a probe holds only when it is stable and its SLOs hold (:func:`blockctl.bench.steady.evaluate`).
3. Where it holds even offered its saturation throughput, on upwards in small steps until a probe breaks.
   Overloaded engines can complete *less* than they sustain just below overload: with a KV cache full and a
   queue behind it, vLLM admits whatever fits, preempts (recompute) what then cannot grow, and evicts the
   prefixes later requests would have hit. The saturation probe measures that thrashing, not the capacity
   (measured: `shared-prefix` on 12 simulated H100s completes 39.6 req/s offered 44, yet holds a P99 TTFT of
   1.8 s, stable, offered 40.5).

The probes depend only on the setup and the hint, never on how many processes run them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blockctl.bench.capacity import search_capacity
from blockctl.bench.steady import ProbeOutcome, Saturation, overloaded
from blockctl.errors import ConfigError

# probe(qps, saturation) -> outcome; saturation=True: a saturation probe (its own duration, no SLO stop)
Probe = Callable[[float, bool], ProbeOutcome]


@dataclass(frozen=True, slots=True)
class Plan:
    """How to search. ``start``: first QPS offered for saturation when no hint is given. ``rel_resolution``
    and ``resolution`` end the bisection; ``max_qps`` is a ceiling no probe goes past."""

    start: float
    resolution: float = 0.1
    rel_resolution: float = 0.01
    max_qps: float = 10_000.0
    overload: float = 1.15  # saturation is measured offering this × the hint (more: longer queues to predict over)
    saturation_growth: float = 1.5  # without a hint: × this until a probe is overloaded
    first_fraction: float = 0.9  # the capacity search starts at this × saturation
    growth: float = 1.25  # capacity bracketing factor
    above_growth: float = 1.04  # bracketing factor above a saturation that held (it is seldom far above)


@dataclass(frozen=True, slots=True)
class PolicyCapacity:
    """``capacity`` 0.0 when even the lowest probe broke; ``capped`` when the SLO still held at ``max_qps``
    (a ceiling, not a measurement); ``at_saturation`` when it held offered its measured saturation throughput
    (so the search went on above it: module docstring, 3.); ``saturation`` None when no probe up to
    ``max_qps`` overloaded it."""

    capacity: float
    capped: bool
    saturation: Saturation | None
    probes: tuple[ProbeOutcome, ...]  # the capacity probes, in the order run
    at_saturation: bool = False  # it held even offered its measured saturation: capacity = saturation

    def to_dict(self) -> dict[str, object]:
        sat = self.saturation
        return {
            "capacity": self.capacity,
            "capped": self.capped,
            "at_saturation": self.at_saturation,
            "saturation": None if sat is None else sat.completed_rps,
            "probes": [p.to_dict() for p in self.probes],
            "saturation_probes": [] if sat is None else [p.to_dict() for p in sat.probes],
        }


def find_saturation(probe: Probe, plan: Plan, hint: float | None = None) -> Saturation | None:
    """Completed req/s when offered clearly more than the policy takes; None if ``max_qps`` is not enough."""
    offer = min(plan.max_qps, hint * plan.overload if hint else plan.start)
    tried: list[ProbeOutcome] = []
    while True:
        out = probe(offer, True)
        tried.append(out)
        if overloaded(out):
            assert out.completed_rps is not None and out.offered_rps is not None
            return Saturation(out.completed_rps, out.offered_rps, tuple(tried))
        if offer >= plan.max_qps:
            return None
        done = out.completed_rps or 0.0
        offer = min(plan.max_qps, max(offer * plan.saturation_growth, done * plan.overload))


def find_capacity(probe: Probe, plan: Plan, saturation: Saturation | None) -> PolicyCapacity:
    """The highest QPS that holds: searched below ``saturation`` (or up to ``max_qps`` without one), and above
    it when it held there."""
    if plan.start <= 0 or plan.resolution <= 0:
        raise ConfigError("must be positive", key="--start")
    ceiling = plan.max_qps if saturation is None else min(plan.max_qps, saturation.completed_rps)
    first = plan.start if saturation is None else plan.first_fraction * ceiling
    probes: list[ProbeOutcome] = []

    def holds_many(qs: list[float]) -> list[bool]:
        outs = [probe(q, False) for q in qs]
        probes.extend(outs)
        return [o.held for o in outs]

    res = search_capacity(holds_many, width=1, start=first, resolution=plan.resolution, max_qps=ceiling,
                          rel_resolution=plan.rel_resolution, growth=plan.growth)
    at_saturation = res.capped and ceiling < plan.max_qps
    if at_saturation:
        res = search_capacity(holds_many, width=1, start=res.capacity, start_held=True,
                              resolution=plan.resolution, max_qps=plan.max_qps,
                              rel_resolution=plan.rel_resolution, growth=plan.above_growth)
    # only the user's ceiling makes a capacity a bound
    return PolicyCapacity(res.capacity, res.capped, saturation, tuple(probes), at_saturation)
