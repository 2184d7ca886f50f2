"""A cluster in virtual time: N engine models behind one routing policy, routed on what agents could see."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

from blockctl.bench.capacity import Slo
from blockctl.bench.sim.observe import SCRAPE_INTERVAL_S, SimAgent
from blockctl.bench.steady import AbortWindow
from blockctl.engine.core import Engine
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Prediction, Request
from blockctl.errors import EngineError
from blockctl.predict.lengths import LengthDist
from blockctl.predict.sampled import ExpectedForecaster
from blockctl.predict.view import EngineView
from blockctl.scheduler.policies import InstanceView, Policy, RouteRequest, blank_view


@dataclass(slots=True)
class SimRecord:
    """One simulated request: what was asked, where it went, what was predicted, what happened (seconds)."""

    index: int  # position in the workload
    instance: str
    arrival: float
    prompt_tokens: int
    output_tokens: int  # true length (what the engine ran)
    predicted_output_tokens: int  # what the scheduler and the agent were told
    predicted_ttft_s: float | None = None  # the chosen instance's what-if, when the policy asked for one
    predicted_e2e_s: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    preemptions: int = 0
    error: str | None = None  # set when the engine refused the request (never fits)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival

    @property
    def e2e(self) -> float | None:
        return None if self.finish_time is None else self.finish_time - self.arrival


class _Instance:
    __slots__ = ("adds", "agent", "config", "engine", "model", "name", "next_scrape", "observed")

    def __init__(self, name: str, engine: Engine, config: EngineConfig) -> None:
        self.name = name
        self.engine = engine
        self.config = config  # its own engine settings and step-time model (they differ in a mixed cluster)
        self.model = engine.model
        self.agent = SimAgent(engine, config)  # all that routing learns about the engine comes through it
        self.next_scrape = engine.now  # virtual time of the agent's next /metrics scrape
        self.adds = 0  # requests handed to the engine so far
        # (engine.now, adds, scrapes) when last viewed -> (the agent's view, what-ifs over it); the agent's
        # knowledge changes only when the engine steps (which moves its clock), by an add or by a scrape, so an
        # equal key means an unchanged view that can be reused (predict never mutates its requests).
        self.observed: tuple[tuple[float, int, float], EngineView, ExpectedForecaster] | None = None

    def scrape_until(self, t: float) -> list[Request]:
        """Step the engine to each scrape time up to ``t`` and let the agent scrape there; the finished."""
        done: list[Request] = []
        while self.next_scrape <= t:
            done += self.engine.run_until(self.next_scrape)
            self.agent.scrape()
            self.next_scrape += SCRAPE_INTERVAL_S
        return done


class ClusterSim:
    """Instances named ``i0 … i{n-1}``, each an :class:`Engine` with step-time noise and its own seed.

    NOTE: the engines run *true* output lengths; routing sees each engine only through its
    :class:`~blockctl.bench.sim.observe.SimAgent` (what it proxied, streamed tokens, metrics scraped every
    ``SCRAPE_INTERVAL_S``), and predictions (``whatif.predict``, noise-free) run on that agent's view.
    A what-if starts when the instance's in-flight step ends, so its forecasts are shifted by that
    remainder (``engine.now − t``) to be relative to the request's arrival.
    """

    def __init__(
        self,
        instances: int,
        config: EngineConfig,
        model: StepTimeModel,
        policy: Policy,
        *,
        seed: int = 0,
        noise: float | None = None,
        engines: Sequence[tuple[EngineConfig, StepTimeModel]] | None = None,
    ) -> None:
        """``engines``: a mixed cluster, each instance's own (config, model) (``instances`` of them); else every
        instance runs ``config`` and ``model``."""
        if engines is not None and len(engines) != instances:
            raise ValueError(f"{len(engines)} engine settings for {instances} instances")
        self.config = config
        self.model = model
        self._engines = list(engines) if engines is not None else None
        self.policy = policy
        self.rng = random.Random(seed)
        self._rel = model.rel_noise if noise is None else noise
        self._seed = seed
        self.names = [f"i{i}" for i in range(instances)]
        self._instances = {name: _Instance(name, self._engine(i), self._config(i)) for i, name in enumerate(self.names)}
        self.records: list[SimRecord] = []
        self._inflight: dict[str, SimRecord] = {}
        self.now = 0.0

    def _config(self, i: int) -> EngineConfig:
        return self.config if self._engines is None else self._engines[i % len(self._engines)][0]

    def _engine(self, i: int, now: float = 0.0) -> Engine:
        """Instance ``i``'s engine: the cluster's step-time noise, its own seed derived from the cluster's."""
        model = self.model if self._engines is None else self._engines[i % len(self._engines)][1]
        return Engine(self._config(i), model, now=now, noise=self._rel, seed=self._seed * 1_000_003 + i)

    def advance(self, t: float) -> list[SimRecord]:
        """Run every instance through the steps that start before ``t``; the records that finished."""
        done: list[SimRecord] = []
        for inst in self._instances.values():
            for req in inst.scrape_until(t) + inst.engine.run_until(t):
                done.append(self._finish(inst, req))
        self.now = max(self.now, t)
        return done

    def drain(self) -> list[SimRecord]:
        """Run every instance until it is idle."""
        done: list[SimRecord] = []
        for inst in self._instances.values():
            while inst.engine.has_work():
                for req in inst.engine.run_until(inst.engine.now + 3600.0):
                    done.append(self._finish(inst, req))
        return done

    def dispatch(
        self, index: int, t: float, prompt_tokens: int, output_tokens: int, predicted: int,
        length: LengthDist | None = None, block_hashes: Sequence[int] | None = None,
    ) -> SimRecord:
        """Route a request arriving at ``t`` (after :meth:`advance` to ``t``) and hand it to an engine;
        ``length`` is its predicted length as a distribution (None: exactly ``predicted``); ``block_hashes``
        key its blocks in the engines' prefix caches (when the config turns caching on)."""
        route = RouteRequest(prompt_tokens, predicted, output_tokens, length)
        policy = self.policy
        names = policy.sample(self.names, self.rng)
        told = policy.prediction_length(route)
        if policy.needs_prediction or policy.needs_load:
            ask = policy.needs_prediction
            views = [self._view(self._instances[n], t, prompt_tokens, told, ask, block_hashes) for n in names]
        else:
            views = [blank_view(n) for n in names]
        chosen = policy.choose(route, views, self.rng)
        pred = next((v.prediction for v in views if v.instance == chosen), None)
        inst = self._instances[chosen]
        rec = SimRecord(index, chosen, t, prompt_tokens, output_tokens, told,
                        None if pred is None else pred.ttft_s, None if pred is None else pred.e2e_s)
        self.records.append(rec)
        req = Request(str(index), prompt_tokens, output_tokens, arrival_time=t, block_hashes=block_hashes)
        try:
            inst.engine.add(req)
        except EngineError as exc:
            rec.error = exc.message
            return rec
        inst.agent.admit(req, told, t, length=length, block_hashes=block_hashes)
        inst.adds += 1
        self._inflight[req.req_id] = rec
        return rec

    def prefix_cache_counts(self) -> tuple[int, int]:
        """(queries, hits) in tokens, summed over the instances' prefix caches (as vLLM counts them)."""
        caches = [i.engine.cache for i in self._instances.values() if i.engine.cache is not None]
        return sum(c.queries for c in caches), sum(c.hits for c in caches)

    def agent_queues(self, name: str) -> tuple[list[Request], list[Request]]:
        """(running, waiting) of instance ``name`` as its agent sees them (fresh copies, predicted lengths)."""
        view = self._instances[name].agent.view()
        return [dataclasses.replace(r) for r in view.running], [dataclasses.replace(r) for r in view.waiting]

    def inflight_violations(self, slo: Slo, t: float, start: int = 0) -> int:
        """In-flight requests (workload index ≥ ``start``) already certain to break ``slo``'s limit (TTFT or
        E2E) as of time ``t``."""
        n = 0
        ttft = slo.metric == "ttft"
        for inst in self._instances.values():
            for reqs in (inst.engine.running, inst.engine.waiting):
                for r in reqs:
                    end = r.first_token_time if ttft and r.first_token_time is not None else t
                    n += end - r.arrival_time > slo.limit and int(r.req_id) >= start
        return n

    def _view(
        self, inst: _Instance, t: float, prompt_tokens: int, told: int, with_prediction: bool,
        block_hashes: Sequence[int] | None = None,
    ) -> InstanceView:
        engine = inst.engine
        agent = inst.agent
        key = (engine.now, inst.adds, inst.next_scrape)
        if inst.observed is not None and inst.observed[0] == key:
            _, view, whatif = inst.observed
        else:
            view = agent.view()
            whatif = ExpectedForecaster(view, inst.model)
            inst.observed = (key, view, whatif)
        hit, held = agent.prefix_match(prompt_tokens, block_hashes)
        prediction: Prediction | None = None
        if with_prediction:
            cap = max(1, inst.config.max_model_len - prompt_tokens)
            new = Request("new", prompt_tokens, min(told, cap), prefix_hit=hit)
            p = whatif.predict(new, held)
            lag = max(0.0, engine.now - t)
            prefill = inst.model.prefill_seconds(prompt_tokens, hit, len(view.running),
                                                 inst.config.max_num_batched_tokens) if block_hashes else 0.0
            prediction = Prediction(p.ttft_s + lag, p.e2e_s + lag, p.queue_s + lag, p.running, p.waiting,
                                    p.kv_free_blocks, prefill, hit)
        return InstanceView(
            instance=inst.name,
            prediction=prediction,
            running=len(view.running),
            waiting=len(view.waiting),
            outstanding=len(agent.tracker.inflight),
            kv_free_blocks=view.kv_free_blocks,
            kv_total_blocks=view.kv_total_blocks,
            waiting_prompt_blocks=view.waiting_prompt_blocks,
            recent_requests=agent.tracker.recent_requests(t),
            prefix_hit_tokens=hit,
            block_size=inst.config.block_size,
        )

    def _finish(self, inst: _Instance, req: Request) -> SimRecord:
        rec = self._inflight.pop(req.req_id)
        inst.agent.finish(req)
        rec.first_token_time = req.first_token_time
        rec.finish_time = req.finish_time
        rec.preemptions = req.num_preemptions
        return rec


def simulate(
    sim: ClusterSim,
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    predicted: Sequence[int],
    arrivals: Sequence[float],
    *,
    abort: Slo | Sequence[AbortWindow] | None = None,
    check_every: int = 25,
    lengths: Sequence[LengthDist | None] | None = None,
    hashes: Sequence[Sequence[int] | None] | None = None,
) -> bool:
    """Feed every request at its arrival time, then drain; False if stopped early because ``abort`` broke.

    Early stop: an :class:`AbortWindow` is certainly broken once more of its requests (index ≥ its start)
    exceed its SLO's limit than it allows; finished and in-flight requests are counted (an in-flight request
    that has waited past the limit can only end up over it). A bare ``Slo`` is one window over the whole run.
    """
    n = len(arrivals)
    if isinstance(abort, Slo):
        allowed = abort.max_violations(n) if abort.metric in ("ttft", "e2e") else None
        windows = [] if allowed is None else [AbortWindow(abort, 0, allowed)]
    else:
        windows = list(abort or ())
    over_done = [0] * len(windows)
    for i, t in enumerate(arrivals):
        finished = sim.advance(t)
        if windows:
            for k, w in enumerate(windows):
                over_done[k] += sum(r.index >= w.start and _over(r, w.slo) for r in finished)
            if i % check_every == 0 and any(
                over_done[k] + sim.inflight_violations(w.slo, t, w.start) > w.allowed
                for k, w in enumerate(windows)
            ):
                return False
        rec = sim.dispatch(i, t, prompt_tokens[i], output_tokens[i], predicted[i],
                           None if lengths is None else lengths[i], None if hashes is None else hashes[i])
        if rec.error is not None:
            for k, w in enumerate(windows):
                over_done[k] += i >= w.start
    sim.drain()
    return True


def _over(rec: SimRecord, slo: Slo) -> bool:
    value = rec.ttft if slo.metric == "ttft" else rec.e2e
    return value is None or value > slo.limit
