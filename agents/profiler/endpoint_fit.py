"""The step-time fit for whole engine steps measured through the API (pure).

Two candidate forms, chosen by 5-fold cross-validation on the measured rows:

* **linear**: the profile form with ``roofline_p = 1`` and ``linear_mem_ms = 0`` (the linear layers cost
  ``linear_ms_per_token`` per token; the fixed part is ``const_ms``), linear in every coefficient, fitted with a
  robust (soft-L1) loss of the relative error, all coefficients >= 0. Black-box step times are noisy (the
  host's own load, the client's timing), and where the rows do not show the roofline's knee this is the
  safer form.
* **roofline**: the full form a torch profile gets (``blockctl.engine.fit.fit_params``): a weight-read floor,
  then compute-bound. Where the rows do show the knee it is the right form: an engine whose decode steps
  barely grow with the batch (memory-bound) while its prefill costs about 1 ms a token (compute-bound)
  cannot be drawn by one straight line, and the linear form bent its attention and mixed-step terms to
  fit the prefill rows (measured on vLLM on CPU, a 50 M-parameter random Llama: 5-fold CV error 11.3 %
  linear against 6.8 % roofline, the largest prefill held out 39.4 % against 1.7 %, and a 16-token prompt
  beside seven decodes priced 63 ms against 37 ms).

A form that cannot be fitted (too few rows, no convergence) is not a candidate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from blockctl.engine.fit import MeasuredRow, fit_params, kfold_mape
from blockctl.engine.steptime import StepTimeParams
from blockctl.errors import ProfileError

MIN_ROWS = 8


def fit_engine_params(rows: Sequence[MeasuredRow]) -> StepTimeParams:
    """The linear or the roofline fit of ``rows``, whichever cross-validates better (module docstring)."""
    try:
        if kfold_mape(rows, fitter=fit_roofline) < kfold_mape(rows, fitter=fit_linear):
            return fit_roofline(rows)
    except ProfileError:
        pass  # too few rows for a form, or a fold that did not converge: the linear fit answers (or says why)
    return fit_linear(rows)


def fit_roofline(rows: Sequence[MeasuredRow]) -> StepTimeParams:
    """The roofline form's fit; a term no row exercises is 0 (its fitted value would be arbitrary)."""
    params = fit_params(rows)
    shapes = [r.shape() for r in rows]
    unused = {
        "prefill_attn_ms_per_mpair": not any(s.prefill_tokens for s in shapes),
        "cached_ms_per_ktoken": not any(s.prefill_cached for s in shapes),
        "decode_attn_ms_per_ktoken": not any(s.decode_context for s in shapes),
        "mixed_step_ms": not any(s.prefill_seqs and s.decode_batch for s in shapes),
    }
    return dataclasses.replace(params, **{name: 0.0 for name, zero in unused.items() if zero})


def fit_linear(rows: Sequence[MeasuredRow]) -> StepTimeParams:
    """The linear form's fit (module docstring)."""
    from scipy.optimize import least_squares

    if len(rows) < MIN_ROWS:
        raise ProfileError(f"need at least {MIN_ROWS} measured engine steps to fit, got {len(rows)}")
    shapes = [r.shape() for r in rows]
    # columns: const, per token, prefill attention, cached prefix, decode context, rows, mixed step
    x = np.array([[1.0, s.prefill_tokens + s.decode_batch, s.prefill_attn * 1e-6, s.prefill_cached * 1e-3,
                   s.decode_context * 1e-3, (s.prefill_seqs + s.decode_batch) * 1e-3,
                   1.0 if s.prefill_seqs and s.decode_batch else 0.0] for s in shapes])
    y = np.array([r.ms_median for r in rows])
    used = np.flatnonzero(np.any(x != 0.0, axis=0))  # a term the rows never exercise stays 0
    xw = x[:, used] / y[:, None]
    start = np.linalg.lstsq(xw, np.ones(len(y)), rcond=None)[0].clip(0.0, None)
    res = least_squares(lambda c: xw @ c - 1.0, start, bounds=(0.0, np.inf), loss="soft_l1", f_scale=0.1)
    c = [0.0] * x.shape[1]
    for i, v in zip(used, res.x, strict=True):
        c[int(i)] = float(v)
    return StepTimeParams(
        const_ms=c[0], linear_mem_ms=0.0, linear_ms_per_token=c[1], roofline_p=1.0, prefill_attn_ms_per_mpair=c[2],
        cached_ms_per_ktoken=c[3], decode_attn_ms_per_ktoken=c[4], lm_head_ms_per_krow=c[5], mixed_step_ms=c[6],
    )
