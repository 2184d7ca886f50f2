"""Turn the agent's in-flight table and the engine's metrics into the engine-model view a what-if runs on.

Reconciliation with the engine's ``/metrics`` (used only when the scrape is at most ``FRESH_S`` old):

* Running vs waiting: a request with at least one (observed or estimated) token is running, in arrival order
  (FCFS admission); a request without one is waiting, so the what-if admits it exactly as the engine would.
* Preemptions: the agent cannot see a preemption, but the engine's ``num_requests_waiting`` can exceed the
  number of tracked requests that had no first token at scrape time. That excess is taken as preempted: the
  latest-admitted running requests that produced no token since the scrape (vLLM preempts from the back of
  the running queue) move to the front of the waiting queue with their KV dropped (recompute).
* KV size: the engine's ``vllm:cache_config_info`` names its ``num_gpu_blocks``; when present it replaces the
  configured size (the profile's estimate of what vLLM would allocate), at any age.
* KV usage: ``kv_free_blocks`` comes from the engine's KV usage when known. If the engine uses more blocks
  than the view accounts for by over ``HIDDEN_TOLERANCE`` of the cache (traffic that bypassed the agent, or a
  cache smaller than configured), the what-if runs on a cache shrunk by that hidden usage (to half at most).
  Only when no request left since the scrape: otherwise the excess may be blocks freed in between.
* Shared blocks: requests whose prompts share cached blocks hold them once in the engine (vLLM counts
  references), but the engine model counts each request's blocks apart. The agent's shadow cache counts the
  references beyond each block's first (``shared_blocks``); the what-if's cache grows by that many.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from blockctl.engine.types import EngineConfig, Phase, Request
from blockctl.predict.lengths import LengthDist
from blockctl.predict.observation import EngineObservation
from blockctl.predict.tracker import Tracked, assumed_total_output, estimated_produced

FRESH_S = 2.0
HIDDEN_TOLERANCE = 0.1


@dataclass(frozen=True, slots=True)
class EngineView:
    """The engine state a what-if starts from, plus its load summary.

    Request times are relative to now. NOTE: the Requests are cached on their Tracked entries and
    refreshed by each ``build_view``: read them before the next one, never keep them (``whatif.predict``
    copies what it simulates)."""

    running: list[Request]
    waiting: list[Request]
    config: EngineConfig  # num_gpu_blocks possibly shrunk by hidden usage, grown by shared blocks
    kv_free_blocks: int
    kv_total_blocks: int
    waiting_prompt_blocks: int
    preempted: int  # running requests moved to waiting by the preemption rule
    hidden_blocks: int  # KV blocks in use that the view does not account for
    # req_id -> (its length distribution, the most it may still run to) for the requests whose length is a
    # distribution (the others run to their ``output_tokens``): what blockctl.predict.sampled draws from
    lengths: dict[str, tuple[LengthDist, int]] = dataclasses.field(default_factory=dict)


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def run_length(
    produced: int, predicted: int, max_tokens: int | None, cap: int, length: LengthDist | None = None
) -> int:
    """Total output tokens the what-if runs an in-flight request to: with a distribution, its expected total
    given ``produced`` (``LengthDist.expected_total``); past its atoms or without one, the tracker's
    ``assumed_total_output`` (its common case, the prediction not yet reached and within the caps,
    short-cut). Always capped by ``max_tokens`` and ``cap`` and at least one token beyond ``produced``."""
    if length is not None and not length.exact:
        total = length.expected_total(produced)
        if total is not None:
            if max_tokens is not None and total > max_tokens:
                total = max_tokens
            return max(min(total, cap), produced + 1)
    if produced < predicted <= cap and (max_tokens is None or predicted <= max_tokens):
        return predicted
    return assumed_total_output(produced, predicted, max_tokens, cap)


def set_progress(req: Request, produced: int, *, running: bool) -> None:
    """Place ``req`` in the engine model: running with the KV of prompt + produced − 1 tokens, or waiting
    with none (a preempted request is recomputed, so it keeps its produced tokens but not their KV)."""
    req.num_output_tokens = produced
    if running:
        req.num_computed_tokens = req.prompt_tokens + produced - 1
        req.phase = Phase.RUNNING
    else:
        req.num_computed_tokens = 0
        req.phase = Phase.WAITING


def _first_token_at(t: Tracked) -> float | None:
    """When the first token came (streaming) or is estimated to have come (non-streaming)."""
    if t.stream or t.predicted_ttft_s is None:
        return t.first_token_at
    return t.arrival + t.predicted_ttft_s


def build_view(
    inflight: Iterable[Tracked],
    now: float,
    config: EngineConfig,
    obs: EngineObservation | None,
    last_finish_at: float | None = None,
    shared_blocks: int = 0,
) -> EngineView:
    # One pass over the table (this runs for every instance on every arrival in the simulator): progress,
    # lengths, KV blocks and the requests unstarted at the scrape, with the rules of the helpers above inlined.
    running: list[Request] = []
    run_tracked: list[Tracked] = []
    waiting: list[Request] = []
    max_len = config.max_model_len
    bs = config.block_size
    fresh = obs is not None and now - obs.at <= FRESH_S
    count_unstarted = fresh and obs is not None and obs.waiting is not None
    obs_at = obs.at if obs is not None else 0.0
    unstarted = used_view = waiting_blocks = 0
    lengths: dict[str, tuple[LengthDist, int]] = {}
    phase_running, phase_waiting = Phase.RUNNING, Phase.WAITING
    for t in inflight:
        prompt = t.prompt_tokens
        cap = max_len - prompt
        if cap < 1:
            continue  # the engine rejects it; it will leave the table in a moment
        produced = t.produced if t.stream else estimated_produced(t, now)
        if produced >= cap:
            produced = cap - 1
        predicted, max_tokens, dist = t.predicted_output_tokens, t.max_tokens, t.length_dist
        if dist is None and produced < predicted <= cap and (max_tokens is None or predicted <= max_tokens):
            total = predicted  # run_length's common case
        else:
            total = run_length(produced, predicted, max_tokens, cap, dist)
            if dist is not None and not dist.exact:
                lengths[t.req_id] = (dist, cap if max_tokens is None or max_tokens > cap else max_tokens)
        req = t.view_req
        if req is None:  # one Request per tracked request, refreshed in place (the what-if copies it)
            req = t.view_req = Request(t.req_id, prompt, total)
        req.arrival_time = t.arrival - now
        req.output_tokens = total
        req.num_output_tokens = produced
        if produced > 0:  # set_progress, running
            req.num_computed_tokens = prompt + produced - 1
            req.phase = phase_running
            running.append(req)
            run_tracked.append(t)
            used_view += -(-(prompt + produced) // bs)
        else:
            req.num_computed_tokens = 0
            req.phase = phase_waiting
            waiting.append(req)
            waiting_blocks += -(-prompt // bs)
        if count_unstarted and t.arrival <= obs_at:
            first = t.first_token_at if t.stream or t.predicted_ttft_s is None else _first_token_at(t)
            if first is None or first > obs_at:
                unstarted += 1

    preempted = 0
    if count_unstarted and obs is not None and obs.waiting is not None:
        excess = obs.waiting - unstarted
        moved: list[int] = []
        for k in range(len(running) - 1, -1, -1):
            if len(moved) >= excess:
                break
            t = run_tracked[k]
            if t.stream and t.last_token_at is not None and t.last_token_at >= obs_at:
                continue  # it produced a token since the scrape: running
            moved.append(k)
        if moved:
            moved_reqs = [running[k] for k in moved]
            for k in moved:  # descending indices: deleting keeps the others in place
                del running[k]
            for req in moved_reqs:
                set_progress(req, req.num_output_tokens, running=False)
                blocks = _blocks(req.prompt_tokens + req.num_output_tokens, bs)
                used_view -= blocks
                waiting_blocks += blocks
            preempted = len(moved)
            waiting = moved_reqs[::-1] + waiting

    if obs is not None and obs.num_gpu_blocks is not None and obs.num_gpu_blocks != config.num_gpu_blocks:
        config = dataclasses.replace(config, num_gpu_blocks=obs.num_gpu_blocks)
    total_blocks = config.num_gpu_blocks
    kv_free = max(0, total_blocks - used_view)
    hidden = 0
    sim_config = config
    if fresh and obs is not None and obs.kv_usage is not None:
        used_metric = obs.kv_usage * total_blocks
        kv_free = max(0, round(total_blocks - used_metric))
        settled = last_finish_at is None or last_finish_at < obs.at  # else the blocks may be freed since
        if settled and used_metric - used_view > HIDDEN_TOLERANCE * total_blocks:
            hidden = int(used_metric - used_view)
            # floor at half the cache, so one large request the engine holds always fits the what-if
            sim_config = dataclasses.replace(config, num_gpu_blocks=max(total_blocks // 2, total_blocks - hidden))
    sim_config = sim_config.grown(shared_blocks)
    return EngineView(
        running=running,
        waiting=waiting,
        config=sim_config,
        kv_free_blocks=kv_free,
        kv_total_blocks=total_blocks,
        waiting_prompt_blocks=waiting_blocks,
        preempted=preempted,
        hidden_blocks=hidden,
        lengths=lengths,
    )
