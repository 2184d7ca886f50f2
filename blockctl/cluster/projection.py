"""Cluster-level what-if for the predictive scaler: the TTFT typical requests would see after a scale-up.

The instances' current requests (as their agents see them: predicted lengths, progress) are restored into
noise-free engine models; projected arrivals come at the recent rate, extrapolated by its trend over the
start-up time, times ``1 + margin``, with the recent requests' (prompt, predicted output) lengths in turn (the
mix matters: a mean-sized request stream overstates capacity when lengths are heavy-tailed); each
goes to the instance with the fewest requests in flight (ties: least remaining work), a cheap stand-in for
the predictive router. ``count − len(instances)`` new, empty instances join at ``startup_s``; a smaller
``count`` drops the least-loaded instances from routing at once (they finish what they hold). The result is
the worst TTFT of the arrivals in ``[startup_s, startup_s + horizon_s)``: what capacity started now can fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blockctl.engine.core import Engine
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Phase, Request

Queues = tuple[Sequence[Request], Sequence[Request]]  # (running, waiting) of one instance
MAX_ARRIVALS = 4000  # bound on the projection's work, whatever the rate


@dataclass(frozen=True, slots=True)
class Load:
    """The projected traffic: ``rate`` req/s now, changing by ``slope`` req/s per second up to ``startup_s``;
    arrival i has the lengths ``lengths[i % len(lengths)]`` (prompt tokens, predicted output tokens)."""

    rate: float
    lengths: Sequence[tuple[int, int]]
    slope: float = 0.0
    margin: float = 0.2

    def arrivals(self, until: float, startup_s: float) -> list[float]:
        out: list[float] = []
        t = 0.0
        while len(out) < MAX_ARRIVALS:
            rate = max(0.0, self.rate + self.slope * min(t, startup_s)) * (1.0 + self.margin)
            if rate <= 1e-9:
                if self.slope <= 0 or t >= startup_s:
                    break
                t += 0.5
                continue
            t += 1.0 / rate
            if t >= until:
                break
            out.append(t)
        return out


def _copy(r: Request) -> Request:
    return Request(r.req_id, r.prompt_tokens, r.output_tokens, num_computed_tokens=r.num_computed_tokens,
                   num_output_tokens=r.num_output_tokens, phase=r.phase)


def _engine(config: EngineConfig, model: StepTimeModel, queues: Queues | None) -> Engine:
    engine = Engine(config, model)
    if queues is not None:
        running, waiting = queues
        for r in running:
            engine.restore(_copy(r))
        for r in waiting:
            req = _copy(r)
            req.num_computed_tokens, req.phase = 0, Phase.WAITING
            engine.restore(req)
    return engine


def _remaining(e: Engine) -> int:
    return sum(r.output_tokens - r.num_output_tokens for r in (*e.running, *e.waiting))


def project_ttft(
    config: EngineConfig,
    model: StepTimeModel,
    instances: Sequence[Queues],
    count: int,
    load: Load,
    *,
    startup_s: float,
    horizon_s: float,
    starting: Sequence[float] = (),
    give_up_above: float = float("inf"),
) -> float:
    """Worst projected TTFT (s) of typical arrivals once ``count`` instances serve (module docstring).

    ``starting``: seconds until each instance already launched serves; they are part of ``count`` (after the
    serving ``instances``), and any further ones join at ``startup_s``. Once a judged request has waited
    more than ``give_up_above`` the answer is that wait (the caller only needs to know it is too much).
    """
    engines = [_engine(config, model, q) for q in instances]
    if count < len(engines):
        engines.sort(key=lambda e: (len(e.running) + len(e.waiting), _remaining(e)), reverse=True)
        del engines[count:]  # the dropped ones get no new requests; their own work does not matter here
    extra = max(0, count - len(engines))
    joins = sorted([max(0.0, s) for s in starting][:extra] + [startup_s] * max(0, extra - len(starting)))
    end = startup_s + horizon_s
    judged: list[Request] = []
    judged_set: set[Request] = set()
    backlog: list[Request] = []  # arrivals while nothing serves; they go to the first instance that joins
    pool = list(engines)
    lengths = list(load.lengths) or [(256, 256)]

    def join_until(t: float) -> None:
        while joins and joins[0] <= t:
            e = _engine(config, model, None)
            e.now = joins.pop(0)
            pool.append(e)
            for r in backlog:
                e.add(r)
            backlog.clear()

    for i, t in enumerate(load.arrivals(end, startup_s)):
        join_until(t)
        prompt, out = lengths[i % len(lengths)]
        prompt = min(prompt, config.max_model_len - 1)
        req = Request(f"p{i}", prompt, max(1, min(out, config.max_model_len - prompt)), arrival_time=t)
        if t >= startup_s:
            judged.append(req)
            judged_set.add(req)
        if not pool:
            backlog.append(req)
            continue
        for e in pool:
            e.run_until(t)
            if e.waiting and t - e.waiting[0].arrival_time > give_up_above and e.waiting[0] in judged_set:
                return t - e.waiting[0].arrival_time
        min(pool, key=lambda e: (len(e.running) + len(e.waiting), _remaining(e))).add(req)
    join_until(float("inf"))
    if not pool:
        return float("inf")
    stop = end + 4.0 * max(1.0, horizon_s)
    for e in pool:
        e.run_until(stop)
    if not judged:
        return 0.0
    return max((r.first_token_time if r.first_token_time is not None else stop) - r.arrival_time for r in judged)
