"""The two forms of the step-time model the agent learns online, each linear in its coefficients (pure).

- ``line``: the linear layers as a straight line in the step's tokens ``N`` (no weight-read floor),

      step_ms = c0 + c1 * N/1e3 + c2 * prefill_attn/1e6 + c3 * decode_context/1e3 + c4 * rows/1e3 + c5 * mixed

  which can take any slope, so a wrong profile (a GPU's on a CPU engine) is corrected in slope as well as level;
- ``roofline``: the profile's own linear-layer curve ``lin(N)`` (its floor, its knee, its compute slope) kept in
  shape and learned in scale, ``c1 * lin(N)`` in place of ``c1 * N``. A straight line cannot draw a knee: on an
  engine whose decode steps are weight-bound (eight sequences cost little more than one) while its prefill
  tokens are compute-bound, a line fitted to both prices every decode row at a prefill token's cost.

``c0`` is the per-step constant (overhead included). Each form starts from the profile's model projected onto it
over the steps the engine can run (the roofline form holds the profile exactly) and is moved by its own
:class:`~blockctl_agents.predictor.rls.RobustRls`; the learner predicts with whichever form predicted the recent
windows of steps best (``learn.py``), as ``profile engine`` keeps the fit that cross-validates better.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, StepShape
from blockctl_agents.predictor.rls import RobustRls

STEP_CLIP = 2.5  # robust SDs beyond which a step's innovation is clipped
STEP_DRIFT = 0.01  # per learned step, as a share of the prior SD: a memory of a few hundred steps
FLOOR_TERM_MS = 2.0  # prior SD of each coefficient: at least what moves a large step by this much
_TAIL = ("prefill_attn_ms_per_mpair", "decode_attn_ms_per_ktoken", "row_ms_per_krow", "mixed_step_ms")


class StepForm:
    """One form: its coefficient names, its features of a step, its RLS, and the model its coefficients make."""

    name = "line"
    coeffs: tuple[str, ...] = ("step_const_ms", "linear_ms_per_ktoken", *_TAIL)

    def __init__(self, base: StepTimeModel, config: EngineConfig) -> None:
        self.base, self.config = base, config
        prior = self._prior()
        big = self.features(_big_shape(config))
        sd = [max(abs(v), FLOOR_TERM_MS / f if f > 0 else FLOOR_TERM_MS) for v, f in zip(prior, big, strict=True)]
        self.rls = RobustRls(prior, sd, drift=STEP_DRIFT, lower=[0.0] * len(prior),
                             upper=[100 * s + 1000.0 for s in sd], clip=STEP_CLIP)

    def tokens_feature(self, n: int) -> float:
        return n * 1e-3

    def features(self, s: StepShape) -> list[float]:
        return [1.0, self.tokens_feature(s.prefill_tokens + s.decode_batch), s.prefill_attn * 1e-6,
                s.decode_context * 1e-3, (s.prefill_seqs + s.decode_batch) * 1e-3,
                1.0 if s.prefill_seqs and s.decode_batch else 0.0]

    def linear_layers(self, c1: float) -> dict[str, float]:
        """The profile parameters of the linear layers for the learned ``c1``: a straight line."""
        return {"linear_mem_ms": 0.0, "linear_ms_per_token": c1 * 1e-3, "roofline_p": 1.0}

    def model(self) -> StepTimeModel:
        c0, c1, c2, c3, c4, c5 = (float(v) for v in self.rls.theta)
        params = dataclasses.replace(
            self.base.params, const_ms=0.0, **self.linear_layers(c1), prefill_attn_ms_per_mpair=c2,
            decode_attn_ms_per_ktoken=c3, lm_head_ms_per_krow=c4, mixed_step_ms=c5,
        )
        return StepTimeModel(params=params, overhead_ms=c0, rel_noise=self.base.rel_noise)

    def coefficients(self) -> dict[str, float]:
        return dict(zip(self.coeffs, (round(float(v), 6) for v in self.rls.theta), strict=True))

    def _prior(self) -> list[float]:
        """The profile's model in this form, fitted (relative error) over the steps this engine can run."""
        c = self.config
        budget = min(c.max_num_batched_tokens, c.max_model_len)
        batches = sorted({0, 1, 2, 4, c.max_num_seqs // 2, c.max_num_seqs})
        prefills = sorted({0, 16, budget // 8, budget // 2, budget})
        shapes = [StepShape(prefill_tokens=p, prefill_seqs=1 if p else 0, prefill_attn=p * (p + 1) / 2,
                            decode_batch=b, decode_context=b * ctx)
                  for b in batches for p in prefills for ctx in (64, c.max_model_len // 2) if b + p > 0]
        y = np.array([1e3 * self.base.step_seconds(s) for s in shapes])
        x = np.array([self.features(s) for s in shapes]) / y[:, None]
        coef = np.linalg.lstsq(x, np.ones(len(y)), rcond=None)[0]
        return [max(0.0, float(v)) for v in coef]


class RooflineForm(StepForm):
    """The profile's linear-layer curve, scaled (module docstring)."""

    name = "roofline"
    coeffs = ("step_const_ms", "linear_scale", *_TAIL)

    def tokens_feature(self, n: int) -> float:
        return self.base.linear_ms(n)

    def linear_layers(self, c1: float) -> dict[str, float]:
        """``c1 * lin(N)``: the profile's roofline with its floor and its slope scaled by ``c1``."""
        p = self.base.params
        return {"linear_mem_ms": c1 * p.linear_mem_ms, "linear_ms_per_token": c1 * p.linear_ms_per_token}


def _big_shape(c: EngineConfig) -> StepShape:
    tokens = min(c.max_num_batched_tokens, c.max_model_len)
    return StepShape(prefill_tokens=tokens, prefill_seqs=1, prefill_attn=tokens * (tokens + 1) / 2,
                     decode_batch=c.max_num_seqs, decode_context=c.max_num_seqs * c.max_model_len // 2)
