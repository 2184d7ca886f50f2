"""Online learning of the engine the agent fronts: step-time coefficients and the time to first token (pure).

**Steps.** Every engine step ends with one token for each decoding sequence, streamed together, so the agent
groups token arrivals into steps: a token opens a new group when its request already has a token in the open
one, or when it comes more than ``GROUP_SHARE`` of a predicted step after the group's first token. Each member
that was already decoding saw exactly that step since its previous token, so the step took the median of
those gaps (fragments of one step, read apart by a busy loop, each measure the same step). Its shape comes
from the in-flight table: every stream that had its first token before (context = prompt + produced) decoded
in it, the members whose first token it carries ran their prefill in it. Nothing is learned while a
non-streaming request is in flight (its progress is unseen).

The learned model is the profile's form (:mod:`blockctl.engine.steptime`) with a straight roofline
(``roofline_p = 1``, no weight-read floor: within one engine's operating range the linear layers' cost is
fitted as linear in the step's tokens ``N``), so it is linear in its coefficients,

    step_ms = c0 + c1 * N/1e3 + c2 * prefill_attn/1e6 + c3 * decode_context/1e3 + c4 * rows/1e3 + c5 * mixed

(``c0`` the per-step constant, overhead included). They start from the profile's model projected onto this
form over the steps the engine can run, and :class:`~blockctl_agents.predictor.rls.RobustRls` moves them,
so a wrong profile (GPU on a CPU engine, torch-only steps) is corrected in slope as well as level.

An update learns a window of consecutive steps (``WINDOW_STEPS``, or fewer that took ``WINDOW_MS``) as one
observation, their features and times summed: a host that stalls and then catches up (a burst of near-zero
gaps, as a late emulator or a preempted API server produce) is learned at its average speed, which is what a
request's latency adds up, instead of as many impossible near-zero steps. The agent predicts with the learned
model only while it predicted the last ``ERROR_WINDOW`` windows (each before learning it) better than the
profile's model did; an exact profile (the emulator's own) stays in use.

**First token.** ``actual TTFT - (predicted TTFT without overhead)`` — what the engine adds per request
(API server, tokenising, queueing the model missed) — is learned as ``r0 + r1 * prompt_tokens/1e3`` by a
second robust RLS, starting from the profile's ``request_overhead_ms`` (0 when the profile has none).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import deque
from typing import Any

import numpy as np

from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, StepShape
from blockctl.predict.tracker import Tracked
from blockctl.promexpo import Families
from blockctl_agents.predictor.rls import ERROR_WINDOW, RobustRls

GROUP_SHARE = 0.5  # tokens within this share of a predicted step after a step's first token belong to it
WINDOW_STEPS = 16  # steps summed into one update (the model is linear: a window's time is its features' sum)
WINDOW_MS = 100.0  # ... or fewer when they took this long
STEP_CLIP = 2.5  # robust SDs beyond which a step's innovation is clipped
STEP_DRIFT = 0.01  # per learned step, as a share of the prior SD: a memory of a few hundred steps
TTFT_DRIFT = 0.05  # per request: a memory of some tens of requests
TTFT_CLIP = 0.5  # first-token times are heavy-tailed (host stalls): clip hard, tracking the median more than the mean
MAX_STEP_S = 5.0  # a longer gap is an idle engine or a stall, never one step
COEFFS = ("step_const_ms", "linear_ms_per_ktoken", "prefill_attn_ms_per_mpair", "decode_attn_ms_per_ktoken",
          "row_ms_per_krow", "mixed_step_ms")
FLOOR_TERM_MS = 2.0  # prior SD of each coefficient: at least what moves a large step by this much


@dataclasses.dataclass(slots=True)
class _Step:
    start: float  # first token of the group
    members: set[str]
    gaps: list[float]  # members that were decoding: time since their previous token
    firsts: dict[str, int] = dataclasses.field(default_factory=dict)  # members whose first token this is: prompt


class StepLearner:
    """Robust recursive least squares over the step-time coefficients (module docstring), fed by token arrivals."""

    def __init__(self, base: StepTimeModel, config: EngineConfig) -> None:
        self.base = base
        self.config = config
        prior = self._prior()
        big = self._features(self._big_shape())
        sd = [max(abs(v), FLOOR_TERM_MS / f if f > 0 else FLOOR_TERM_MS) for v, f in zip(prior, big, strict=True)]
        self.rls = RobustRls(prior, sd, drift=STEP_DRIFT, lower=[0.0] * len(prior),
                             upper=[100 * s + 1000.0 for s in sd], clip=STEP_CLIP)
        self.model = base
        self._open: _Step | None = None
        self.skipped = 0
        self.steps = 0  # learned steps (an update learns a window of them)
        self._acc, self._acc_ms = [0.0] * len(prior), 0.0  # the window so far: summed features and times
        self._acc_profile_ms = 0.0  # ... and what the profile's model says they take
        self._profile_ape: deque[float] = deque(maxlen=ERROR_WINDOW)
        self.using = "profile"

    def _big_shape(self) -> StepShape:
        c = self.config
        tokens = min(c.max_num_batched_tokens, c.max_model_len)
        return StepShape(prefill_tokens=tokens, prefill_seqs=1, prefill_attn=tokens * (tokens + 1) / 2,
                         decode_batch=c.max_num_seqs, decode_context=c.max_num_seqs * c.max_model_len // 2)

    @staticmethod
    def _features(s: StepShape) -> list[float]:
        return [1.0, (s.prefill_tokens + s.decode_batch) * 1e-3, s.prefill_attn * 1e-6, s.decode_context * 1e-3,
                (s.prefill_seqs + s.decode_batch) * 1e-3, 1.0 if s.prefill_seqs and s.decode_batch else 0.0]

    def _prior(self) -> list[float]:
        """The profile's model as the linear form, fitted (relative error) over the steps this engine can run."""
        c = self.config
        budget = min(c.max_num_batched_tokens, c.max_model_len)
        batches = sorted({0, 1, 2, 4, c.max_num_seqs // 2, c.max_num_seqs})
        prefills = sorted({0, 16, budget // 8, budget // 2, budget})
        shapes = [StepShape(prefill_tokens=p, prefill_seqs=1 if p else 0, prefill_attn=p * (p + 1) / 2,
                            decode_batch=b, decode_context=b * ctx)
                  for b in batches for p in prefills for ctx in (64, c.max_model_len // 2) if b + p > 0]
        y = np.array([1e3 * self.base.step_seconds(s) for s in shapes])
        x = np.array([self._features(s) for s in shapes]) / y[:, None]
        coef = np.linalg.lstsq(x, np.ones(len(y)), rcond=None)[0]
        return [max(0.0, float(v)) for v in coef]

    def on_token(self, t: Tracked, now: float, inflight: dict[str, Tracked]) -> StepTimeModel | None:
        """Call before the tracker counts the token; returns a new model when one was rebuilt."""
        step = self._open
        rebuilt = None
        if step is not None and (t.req_id in step.members or now - step.start > self._window(step)):
            rebuilt = self._close(step, inflight)
            step = None
        if step is None:
            step = self._open = _Step(now, set(), [])
        step.members.add(t.req_id)
        if t.last_token_at is None:
            step.firsts[t.req_id] = t.prompt_tokens
        else:
            step.gaps.append(now - t.last_token_at)
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
        decoding = {t.req_id for t in inflight.values() if t.first_token_at is not None} - step.firsts.keys()
        decoding |= {m for m in step.members - step.firsts.keys() if m not in inflight}  # finished since
        certain = 0 < duration < MAX_STEP_S and all(t.stream for t in inflight.values())
        if not certain or not decoding:
            self.skipped += 1
            return None
        context = sum(t.prompt_tokens + t.produced for t in inflight.values() if t.req_id in decoding)
        budget = self.config.max_num_batched_tokens
        chunks = [min(p, budget) for p in step.firsts.values()]
        shape = StepShape(prefill_tokens=sum(chunks), prefill_seqs=len(chunks),
                          prefill_attn=sum(c * (c + 1) / 2 for c in chunks), decode_batch=len(decoding),
                          decode_context=context)
        features = self._features(shape)
        acc = self._acc
        for i, f in enumerate(features):
            acc[i] += f
        self._acc_ms += 1e3 * duration
        self._acc_profile_ms += 1e3 * self.base.step_seconds(shape)
        self.steps += 1
        if self.steps % WINDOW_STEPS and self._acc_ms < WINDOW_MS:
            return None
        self.rls.update(acc, self._acc_ms, floor=0.05)
        self._profile_ape.append(100.0 * abs(self._acc_profile_ms - self._acc_ms) / self._acc_ms)
        self._acc, self._acc_ms, self._acc_profile_ms = [0.0] * len(acc), 0.0, 0.0
        return self._rebuild()

    def _rebuild(self) -> StepTimeModel:
        """The model the agent predicts with: the learned one while it predicted the recent windows better
        than the profile (before learning each), else the profile's own (an exact profile stays)."""
        learned, profile = self.rls.recent_mape(), statistics.mean(self._profile_ape)
        if learned is None or learned >= profile:
            self.using, self.model = "profile", self.base
            return self.model
        self.using = "learned"
        c0, c1, c2, c3, c4, c5 = (float(v) for v in self.rls.theta)
        params = dataclasses.replace(
            self.base.params, const_ms=0.0, linear_mem_ms=0.0, linear_ms_per_token=c1 * 1e-3, roofline_p=1.0,
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
            "steps_learned": self.steps,
            "updates": self.rls.updates,
            "steps_skipped": self.skipped,
            "steps_clipped": self.rls.clipped,
            "using": self.using,
            "recent_window_mape_pct": self.rls.recent_mape(),  # each window of steps, predicted before learning it
            "profile_recent_window_mape_pct": statistics.mean(self._profile_ape) if self._profile_ape else None,
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


def render_learning(f: Families, steps: StepLearner, ttft: TtftLearner, instance: str) -> None:
    """The learned model and its recent one-step-ahead error, as metric families."""
    doc = "Step-time coefficients learned online (see /state)."
    for n, v in zip(COEFFS, steps.rls.theta, strict=True):
        f.gauge("blockctl_agent_learned_coefficient", doc, float(v), {"instance": instance, "name": n})
    r0, r1 = (float(v) for v in ttft.rls.theta)
    f.gauge("blockctl_agent_learned_coefficient", doc, r0, {"instance": instance, "name": "request_overhead_ms"})
    f.gauge("blockctl_agent_learned_coefficient", doc, r1,
            {"instance": instance, "name": "request_ms_per_kilo_prompt_token"})
    mape = steps.rls.recent_mape()
    f.gauge("blockctl_agent_learned_step_abs_pct_error",
            "Mean |error| % of the learned model's step time, predicted before learning each of the last 200 "
            "windows of steps.", float("nan") if mape is None else mape, {"instance": instance})
    f.counter("blockctl_agent_learned_steps", "Engine steps learned from token timings.", steps.steps,
              {"instance": instance})
