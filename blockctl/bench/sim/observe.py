"""What a predictor agent could see of a simulated engine: its requests with *predicted* lengths, its load.

The mapping follows the agent's own rules (``blockctl_agents.predictor.view`` / ``tracker``), given what an
agent in front of a streaming engine observes: per request its prompt tokens, the output length it was told,
the tokens streamed so far, and (through the engine's metrics) which requests are queued or preempted.

* A request with at least one produced token that the engine is running is *running*, with its KV cache
  holding prompt + produced − 1 tokens. Everything else is *waiting* with no KV: preempted requests first
  (vLLM puts them at the front of its queue), then requests still in their first prefill, then the queue.
* The total output a what-if runs each request to is the agent's ``assumed_total_output``: the predicted
  length, or past it the agent's overrun rule, capped by ``max_model_len``. The true length is never used.
* KV free blocks and counts are the engine's own (a real agent reads them from fresh ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping

from blockctl.engine.core import Engine
from blockctl.engine.types import EngineConfig, Phase, Request
from blockctl_agents.predictor.tracker import assumed_total_output


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def observed_queues(
    engine: Engine, told: Mapping[str, int], config: EngineConfig
) -> tuple[list[Request], list[Request]]:
    """(running, waiting) copies of ``engine``'s requests as the agent models them (see module docstring).

    ``told`` maps each request id to the output length the agent was told (the prediction it was routed
    with). The copies are fresh objects: the engine's own requests are never handed to a what-if.
    """
    running: list[Request] = []
    preempted: list[Request] = []
    unstarted: list[Request] = []
    queued: list[Request] = []
    max_len = config.max_model_len
    for r in engine.running:
        produced = r.num_output_tokens
        predicted = told[r.req_id]
        # The agent's rule, short-cut for its common case (prediction not yet reached, within the cap).
        if produced < predicted <= max_len - r.prompt_tokens:
            total = predicted
        else:
            total = assumed_total_output(produced, predicted, None, max_len - r.prompt_tokens)
        if produced > 0:
            running.append(
                Request(r.req_id, r.prompt_tokens, total, num_computed_tokens=r.prompt_tokens + produced - 1,
                        num_output_tokens=produced, phase=Phase.RUNNING)
            )
        else:
            unstarted.append(Request(r.req_id, r.prompt_tokens, total))
    for r in engine.waiting:
        produced = r.num_output_tokens
        predicted = told[r.req_id]
        if produced < predicted <= max_len - r.prompt_tokens:
            total = predicted
        else:
            total = assumed_total_output(produced, predicted, None, max_len - r.prompt_tokens)
        req = Request(r.req_id, r.prompt_tokens, total, num_output_tokens=produced)
        (preempted if produced > 0 else queued).append(req)
    return running, preempted + unstarted + queued


def waiting_prompt_blocks(waiting: list[Request], block_size: int) -> int:
    """KV blocks the waiting requests need to be admitted (prompt plus any output already produced)."""
    return sum(_blocks(r.prompt_tokens + r.num_output_tokens, block_size) for r in waiting)
