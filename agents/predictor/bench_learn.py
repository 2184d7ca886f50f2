"""What online learning costs the agent per streamed token: the same token stream through two agent cores, one
learning and one not (8 streams decoding, a new stream every few steps), CPU time per token of each."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from blockctl.engine.profile import Profile
from blockctl.predict.tracker import Tracked
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.settings import AgentSettings

STREAMS = 8
STEP_S = 0.003


def _feed(core: AgentCore, steps: int) -> tuple[float, int]:
    """Run ``steps`` engine steps of token arrivals through ``core``; (CPU seconds in ``token``, tokens)."""
    now, next_id, tokens, spent = 0.0, 0, 0, 0.0
    left: dict[str, int] = {}
    for i in range(steps):
        while len(left) < STREAMS:
            t = Tracked(f"r{next_id}", now, 100, 64, stream=True)
            core.admit(t, now, dispatched=(0.01, 0.2))
            left[t.req_id] = 32 + (next_id * 7) % 64
            next_id += 1
        now += STEP_S
        for req_id in list(left):
            start = time.process_time()
            core.token(req_id, now + 1e-5 * i % 3)
            spent += time.process_time() - start
            tokens += 1
            left[req_id] -= 1
            if left[req_id] == 0:
                del left[req_id]
                core.complete(req_id, now, ok=True)
    return spent, tokens


def learning_cost(profile: Profile, steps: int = 4000) -> dict[str, Any]:
    settings = AgentSettings("http://127.0.0.1:1", "bench", profile.name,
                             profile.engine_defaults(max_num_seqs=STREAMS * 2))
    out: dict[str, Any] = {"tokens": 0}
    for name, learn in (("without", False), ("with", True)):
        core = AgentCore(dataclasses.replace(settings, learn=learn), profile.model)
        spent, tokens = _feed(core, steps)
        out[f"{name}_learning_us_per_token"] = 1e6 * spent / tokens
        out["tokens"] = tokens
        if learn:
            state = core.learning_state() or {}
            out["steps_learned"] = state.get("steps", {}).get("steps_learned")
    out["learning_us_per_token"] = out["with_learning_us_per_token"] - out["without_learning_us_per_token"]
    return out
