"""Online learning of the engine the agent fronts: step-time coefficients and the time to first token (pure).

**Steps.** Every engine step ends with one token for each decoding sequence, streamed together, so the agent
groups token arrivals into steps: a token opens a new step when its request already has a token in the open
one, or when it comes more than ``GROUP_SHARE`` of a predicted step after the step's first token. A step
whose first token comes ``d`` after the previous step's first token took ``d``; its shape is known from the
in-flight table: the requests that already had a token decoded (context = prompt + produced), the requests
whose first token it carries ran their prefill in it. A step is learned from only when its shape is certain:
some member also had a token in the previous step (no idle gap), every decoding stream is a member, and no
non-streaming request is in flight (their progress is unseen).

The model keeps the profile's form (:mod:`blockctl.engine.steptime`) and learns its linear coefficients,

    step_ms = c0 + c1 * linear_ms_profile(N) + c2 * prefill_attn/1e6 + c3 * decode_context/1e3
                 + c4 * rows/1e3 + c5 * mixed

(``c0`` per-step constant, ``c1`` a scale on the profile's roofline curve of the linear layers, the others the
profile's own coefficients), by :class:`~blockctl_agents.predictor.rls.RobustRls` starting from the profile,
so a wrong profile (GPU on a CPU engine, torch-only steps) is corrected in slope as well as level. The learned
model replaces the agent's step-time model every ``REBUILD_EVERY`` learned steps.

**First token.** ``actual TTFT - (predicted TTFT without overhead)`` — what the engine adds per request
(API server, tokenising, queueing the model missed) — is learned as ``r0 + r1 * prompt_tokens/1e3`` by a
second robust RLS, starting from the profile's ``request_overhead_ms`` (0 when the profile has none).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import deque
from typing import Any

from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, StepShape
from blockctl_agents.predictor.rls import RobustRls
from blockctl_agents.predictor.tracker import Tracked

GROUP_SHARE = 0.5  # tokens within this share of a predicted step after a step's first token belong to it
REBUILD_EVERY = 8  # learned steps between two rebuilds of the agent's step-time model
STEP_DRIFT = 0.01  # per learned step, as a share of the prior SD: a memory of some hundred steps
TTFT_DRIFT = 0.05  # per request: a memory of some tens of requests
TTFT_CLIP = 0.5  # first-token times are heavy-tailed (host stalls): clip hard, tracking the median more than the mean
MAX_STEP_S = 5.0  # a longer gap is an idle engine or a stall, never one step
FIRSTS_KEPT = 64  # recent first tokens kept to find the prefills inside a step
COEFFS = ("step_const_ms", "linear_scale", "prefill_attn_ms_per_mpair", "decode_attn_ms_per_ktoken",
          "row_ms_per_krow", "mixed_step_ms")
FLOOR_TERM_MS = 2.0  # prior SD of each coefficient: at least what moves a large step by this much


@dataclasses.dataclass(slots=True)
class _Step:
    start: float  # first token of the group
    members: set[str]
    gaps: list[float]  # members that were decoding: time since their previous token
    starts: list[float]  # ... and when that previous token came
    end: float = 0.0  # last token of the group


class StepLearner:
    """Robust recursive least squares over the step-time coefficients (module docstring), fed by token arrivals."""

    def __init__(self, base: StepTimeModel, config: EngineConfig) -> None:
        self.base = base
        self.config = config
        p = base.params
        prior = [p.const_ms + base.overhead_ms, 1.0, p.prefill_attn_ms_per_mpair, p.decode_attn_ms_per_ktoken,
                 p.lm_head_ms_per_krow, p.mixed_step_ms]
        big = self._features(self._big_shape())
        sd = [max(abs(v), FLOOR_TERM_MS / f if f > 0 else FLOOR_TERM_MS) for v, f in zip(prior, big, strict=True)]
        sd[1] = max(1.0, sd[1])
        self.rls = RobustRls(prior, sd, drift=STEP_DRIFT, lower=[0.0] * len(prior),
                             upper=[100 * s + 1000.0 for s in sd])
        self.model = base
        self._open: _Step | None = None
        self._firsts: deque[tuple[float, int]] = deque(maxlen=FIRSTS_KEPT)  # (time, prompt) of first tokens
        self.skipped = 0

    def _big_shape(self) -> StepShape:
        c = self.config
        tokens = min(c.max_num_batched_tokens, c.max_model_len)
        return StepShape(prefill_tokens=tokens, prefill_seqs=1, prefill_attn=tokens * (tokens + 1) / 2,
                         decode_batch=c.max_num_seqs, decode_context=c.max_num_seqs * c.max_model_len // 2)

    def _features(self, s: StepShape) -> list[float]:
        return [1.0, self.base.linear_ms(s.prefill_tokens + s.decode_batch), s.prefill_attn * 1e-6,
                s.decode_context * 1e-3, (s.prefill_seqs + s.decode_batch) * 1e-3,
                1.0 if s.prefill_seqs and s.decode_batch else 0.0]

    def on_token(self, t: Tracked, now: float, inflight: dict[str, Tracked]) -> StepTimeModel | None:
        """Call before the tracker counts the token; returns a new model when one was rebuilt."""
        step = self._open
        rebuilt = None
        if step is not None and (t.req_id in step.members or now - step.start > self._window(step)):
            rebuilt = self._close(step, inflight)
            step = None
        if step is None:
            step = self._open = _Step(now, set(), [], [])
        step.members.add(t.req_id)
        step.end = now
        if t.last_token_at is None:
            self._firsts.append((now, t.prompt_tokens))
        else:
            step.gaps.append(now - t.last_token_at)
            step.starts.append(t.last_token_at)
        return rebuilt

    def _window(self, step: _Step) -> float:
        batch = max(1, len(step.members))
        return GROUP_SHARE * self.model.step_seconds(StepShape(decode_batch=batch))

    def _close(self, step: _Step, inflight: dict[str, Tracked]) -> StepTimeModel | None:
        """Learn the step whose end ``step`` groups: its length is the median of the members' gaps (each
        decoding member saw exactly that step since its previous token), its prefills are the first tokens
        that came inside it, its decode batch every stream that was decoding."""
        if not step.gaps:
            return None
        duration = statistics.median(step.gaps)
        began = statistics.median(step.starts)
        decoding = {t.req_id for t in inflight.values() if t.first_token_at is not None and t.first_token_at < began}
        decoding |= {m for m in step.members if m not in inflight}  # finished since; they were in this step
        certain = 0 < duration < MAX_STEP_S and all(t.stream for t in inflight.values())
        if not certain or not decoding:
            self.skipped += 1
            return None
        context = sum(t.prompt_tokens + t.produced for t in inflight.values() if t.req_id in decoding)
        budget = self.config.max_num_batched_tokens
        chunks = [min(p, budget) for at, p in self._firsts if began < at <= step.end]
        shape = StepShape(prefill_tokens=sum(chunks), prefill_seqs=len(chunks),
                          prefill_attn=sum(c * (c + 1) / 2 for c in chunks), decode_batch=len(decoding),
                          decode_context=context)
        self.rls.update(self._features(shape), 1e3 * duration, floor=0.05)
        return self._rebuild() if self.rls.updates % REBUILD_EVERY == 0 else None

    def _rebuild(self) -> StepTimeModel:
        c0, c1, c2, c3, c4, c5 = (float(v) for v in self.rls.theta)
        p = self.base.params
        params = dataclasses.replace(
            p, const_ms=0.0, linear_mem_ms=c1 * p.linear_mem_ms, linear_ms_per_token=c1 * p.linear_ms_per_token,
            prefill_attn_ms_per_mpair=c2, decode_attn_ms_per_ktoken=c3, lm_head_ms_per_krow=c4, mixed_step_ms=c5,
        )
        self.model = StepTimeModel(params=params, overhead_ms=c0, rel_noise=self.base.rel_noise)
        return self.model

    def decode_step_s(self, batch: int) -> float:
        """The current model's pure-decode step of ``batch`` short sequences: a level to rescale
        predictions made with an older model (the TPOT calibration compares against the current one)."""
        return self.model.step_seconds(StepShape(decode_batch=max(1, batch), decode_context=64 * max(1, batch)))

    def state(self) -> dict[str, Any]:
        return {
            "coefficients": dict(zip(COEFFS, (round(float(v), 6) for v in self.rls.theta), strict=True)),
            "steps_learned": self.rls.updates,
            "steps_skipped": self.skipped,
            "steps_clipped": self.rls.clipped,
            "recent_step_mape_pct": self.rls.recent_mape(),
            "decode_step_ms": {str(b): round(1e3 * self.model.step_seconds(StepShape(decode_batch=b,
                                                                                        decode_context=b * 128)), 4)
                               for b in (1, 4, self.config.max_num_seqs)},
        }


class TtftLearner:
    """Robust RLS of what the engine adds before the first token, in milliseconds (module docstring)."""

    def __init__(self, request_overhead_ms: float) -> None:
        self.rls = RobustRls([request_overhead_ms, 0.0], [max(10.0, request_overhead_ms), 50.0],
                             drift=TTFT_DRIFT, lower=[-200.0, -500.0], upper=[500.0, 500.0], clip=TTFT_CLIP)

    def overhead_s(self, prompt_tokens: int) -> float:
        return max(0.0, 1e-3 * self.rls.predict([1.0, prompt_tokens * 1e-3]))

    def observe(self, prompt_tokens: int, residual_s: float) -> None:
        self.rls.update([1.0, prompt_tokens * 1e-3], 1e3 * residual_s, floor=5.0)

    def state(self) -> dict[str, Any]:
        r0, r1 = (float(v) for v in self.rls.theta)
        return {"request_overhead_ms": round(r0, 4), "ms_per_kilo_prompt_token": round(r1, 4),
                "requests_learned": self.rls.updates, "requests_clipped": self.rls.clipped}


def render_learning(steps: StepLearner, ttft: TtftLearner, instance: str) -> list[str]:
    """Prometheus lines of the learned model and its recent one-step-ahead error."""
    inst = f'instance="{instance}"'
    lines = ["# HELP blockctl_agent_learned_coefficient Step-time coefficients learned online (see /state).",
             "# TYPE blockctl_agent_learned_coefficient gauge"]
    lines += [f'blockctl_agent_learned_coefficient{{{inst},name="{n}"}} {float(v)}'
              for n, v in zip(COEFFS, steps.rls.theta, strict=True)]
    r0, r1 = (float(v) for v in ttft.rls.theta)
    lines += [f'blockctl_agent_learned_coefficient{{{inst},name="request_overhead_ms"}} {r0}',
              f'blockctl_agent_learned_coefficient{{{inst},name="request_ms_per_kilo_prompt_token"}} {r1}']
    mape = steps.rls.recent_mape()
    lines += ["# HELP blockctl_agent_learned_step_abs_pct_error Mean |error| % of the learned model's step time, "
              "predicted before each of the last 200 learned steps.",
              "# TYPE blockctl_agent_learned_step_abs_pct_error gauge",
              f"blockctl_agent_learned_step_abs_pct_error{{{inst}}} {'NaN' if mape is None else mape}",
              "# HELP blockctl_agent_learned_steps_total Engine steps learned from token timings.",
              "# TYPE blockctl_agent_learned_steps_total counter",
              f"blockctl_agent_learned_steps_total{{{inst}}} {steps.rls.updates}"]
    return lines
