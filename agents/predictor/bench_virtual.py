"""Accuracy of the agent's predictions in virtual time: an engine model with the profile's step-time noise
plays the instance, and the agent's core sees only what a real agent would (token events, metrics); it learns
from them as a live agent does (an exact profile stays in use), so its own error split (``errors.decode`` and
``decode_given_batches``) says how much of the error is the traffic after dispatch.

This isolates the prediction logic from the host: on a loaded machine a real-time emulator falls behind
and its lag, not the predictor, dominates the error. Not modelled here: HTTP overhead (the learned offset
stays zero).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from blockctl.engine.core import Engine
from blockctl.engine.profile import Profile
from blockctl.engine.types import EngineConfig, Request
from blockctl.predict.lengths import LengthDist
from blockctl.predict.observation import EngineObservation
from blockctl.predict.tracker import Tracked
from blockctl_agents.predictor.bench_accuracy import Outcome
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.settings import AgentSettings

SCRAPE_S = 0.5


@dataclass(frozen=True, slots=True)
class _StepEvents:
    """What the agent observes when one engine step ends."""

    end: float
    produced: list[str]
    finished: list[tuple[str, int]]
    obs: EngineObservation | None


def run_virtual(
    profile: Profile,
    requests: Sequence[tuple[int, int, int]],
    offsets: Sequence[float],
    *,
    seed: int = 0,
    hashes: Sequence[Sequence[int] | None] | None = None,
    dists: Sequence[LengthDist | None] | None = None,
    config: EngineConfig | None = None,
) -> tuple[list[Outcome], AgentCore]:
    """Replay ``(prompt_tokens, true_output_tokens, predicted_output_tokens)`` arriving at ``offsets``.

    With ``hashes`` (each request's block hashes, prefixcache.block_hashes) the engine caches prefixes, as
    vLLM does by default, and the agent prices them from its shadow cache (fed as its proxy would). With
    ``dists`` (each request's predicted length as a distribution, None: exact) the agent keeps them as it keeps
    the ``x-blockctl-predicted-output-quantiles`` the router sends. ``config``: the engine's settings (default:
    the profile's ``engine_defaults``). Returns the outcomes and the agent's core (its errors, its learning)."""
    config = config or profile.engine_defaults()
    if hashes is not None:
        config = dataclasses.replace(config, enable_prefix_caching=True)
    engine = Engine(config, profile.model, noise=profile.model.rel_noise, seed=seed)
    core = AgentCore(AgentSettings("virtual", "virtual-0", profile.name, config), profile.model)
    reqs: dict[str, Request] = {}
    meta: dict[str, tuple[int, int, int, float, float, int, int]] = {}
    next_scrape = 0.0

    pending: list[_StepEvents] = []  # a step that ends after the current arrival: not seen yet

    def deliver(ev: _StepEvents) -> None:
        for rid in ev.produced:
            core.token(rid, ev.end)
        for rid, n in ev.finished:
            core.complete(rid, ev.end, ok=True, output_tokens=n)
        if ev.obs is not None:
            core.obs = ev.obs

    def advance(until: float) -> None:
        nonlocal next_scrape
        while pending and pending[0].end <= until:
            deliver(pending.pop(0))
        while not pending and engine.has_work() and engine.now < until:
            result = engine.step()
            if result is None:
                break
            end = result.start + result.duration
            obs = None
            if end >= next_scrape:  # the engine's metrics as of the step's end
                obs = EngineObservation(
                    end, len(engine.running), len(engine.waiting), engine.kv_usage, float(engine.num_preemptions_total)
                )
                next_scrape = end + SCRAPE_S
            ev = _StepEvents(
                end,
                [r.req_id for r in result.produced],
                [(r.req_id, r.num_output_tokens) for r in result.finished],
                obs,
            )
            if end <= until:
                deliver(ev)
            else:
                pending.append(ev)  # in progress at ``until``: its tokens arrive later
        if not engine.has_work():
            engine.now = max(engine.now, until)

    for i, ((prompt, true_out, predicted), t) in enumerate(zip(requests, offsets, strict=True)):
        advance(t)
        rid = f"v{i}"
        h = () if hashes is None else hashes[i] or ()
        seen = h[: prompt // config.block_size]  # the agent hashes the prompt it proxies, not the reply
        pred, view = core.predict(prompt, predicted, t, seen)
        length = None if dists is None else dists[i]
        core.admit(Tracked(rid, t, prompt, predicted, stream=True, length_dist=length), t, (pred.ttft_s, pred.e2e_s))
        if hashes is not None:
            core.cache_prompt(rid, prompt, seen)
        req = Request(rid, prompt, true_out, arrival_time=t, block_hashes=h or None)
        engine.add(req)
        reqs[rid] = req
        meta[rid] = (prompt, true_out, predicted, pred.ttft_s, pred.e2e_s, len(view.running), len(view.waiting))
    advance(float("inf"))
    outcomes = []
    for rid, req in reqs.items():
        prompt, true_out, predicted, p_ttft, p_e2e, running, waiting = meta[rid]
        assert req.first_token_time is not None and req.finish_time is not None
        outcomes.append(
            Outcome(
                prompt,
                true_out,
                predicted,
                p_ttft,
                p_e2e,
                running,
                waiting,
                ttft_s=req.first_token_time - req.arrival_time,
                e2e_s=req.finish_time - req.arrival_time,
                tokens=req.num_output_tokens,
            )
        )
    return outcomes, core
