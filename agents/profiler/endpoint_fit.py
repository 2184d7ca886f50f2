"""The step-time fit for whole engine steps measured through the API (pure).

Black-box step times are noisy (the host's own load, the client's timing) and cover a narrower range than a
torch profile, so the roofline's knee is not identifiable: the fit keeps the profile form with
``roofline_p = 1`` and ``linear_mem_ms = 0`` (the linear layers cost ``linear_ms_per_token`` per token; the
fixed part is ``const_ms``), which makes it linear in every coefficient, and minimises a robust (soft-L1)
loss of the relative error, all coefficients >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from blockctl.engine.fit import MeasuredRow
from blockctl.engine.steptime import StepTimeParams
from blockctl.errors import ProfileError

MIN_ROWS = 8


def fit_engine_params(rows: Sequence[MeasuredRow]) -> StepTimeParams:
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
