"""Recursive least squares that tracks drifting coefficients, bounded and robust to outliers (pure).

A Kalman filter over ``θ`` with a random-walk drift (each observation lets coefficient ``i`` drift by
``drift * prior_sd[i]``): the forgetting that lets the model follow a host whose speed changes, without the
covariance wind-up of exponential forgetting in directions the data does not excite (e.g. no prefill for a
while): there the covariance only grows back towards the prior. Each observation ``y ≈ θ·x`` is scored in
relative terms (both sides divided by the current prediction), so a 20 ms step and a 2 ms step weigh alike;
the measurement noise is the robust scale of the relative innovation (an exponentially weighted mean absolute
innovation). The innovation is clipped at ``CLIP`` robust standard deviations (Huber-style: a host stall moves
the coefficients by a bounded amount, never by its full size). Coefficients are projected into
``[lower, upper]`` after each update.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

CLIP = 2.5  # innovations beyond this many robust standard deviations are clipped
SCALE_DECAY = 0.05  # weight of the newest |innovation| in the robust scale
MAD_TO_SD = 1.25  # mean absolute deviation → standard deviation (normal)
ERROR_WINDOW = 200  # observations the recent-error summary covers
MIN_SCALE = 0.02  # the robust scale never falls below 2 %: clean data must not freeze the clip


class RobustRls:
    """``θ`` starts at ``prior`` with standard deviations ``prior_sd``; ``drift`` sets the memory (module doc)."""

    def __init__(
        self,
        prior: Sequence[float],
        prior_sd: Sequence[float],
        *,
        drift: float,
        lower: Sequence[float],
        upper: Sequence[float],
        initial_rel_scale: float = 0.2,
        clip: float = CLIP,
    ) -> None:
        self.theta: NDArray[np.float64] = np.array(prior, dtype=np.float64)
        sd = np.asarray(prior_sd, dtype=np.float64)
        self._p0 = np.diag(np.square(sd))
        self.cov: NDArray[np.float64] = self._p0.copy()
        self._q = np.square(drift * sd)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.scale = initial_rel_scale  # robust SD of the relative innovation
        self.clip = clip
        self.updates = 0
        self.clipped = 0
        self.recent_ape: deque[float] = deque(maxlen=ERROR_WINDOW)  # |y - ŷ| / y before each update, in %

    def predict(self, x: Sequence[float]) -> float:
        # a plain dot product: for a handful of coefficients numpy's call overhead is most of the cost, and this
        # runs for every request the agent forwards and every /predict
        return float(sum(t * v for t, v in zip(self.theta.tolist(), x, strict=True)))

    def update(self, x: Sequence[float], y: float, floor: float) -> float:
        """One observation; returns the prediction made before it (``floor`` bounds the relative weight)."""
        xv = np.asarray(x, dtype=np.float64)
        pred = float(self.theta @ xv)
        if y > 0:
            self.recent_ape.append(100.0 * abs(y - pred) / y)
        weight = 1.0 / max(pred, floor)
        xw = xv * weight
        innov = (y - pred) * weight
        limit = self.clip * self.scale
        if abs(innov) > limit:
            self.clipped += 1
        self.scale = max(MIN_SCALE, self.scale + SCALE_DECAY * (min(abs(innov), 4 * limit) * MAD_TO_SD - self.scale))
        innov = max(-limit, min(limit, innov))
        cov = self.cov
        cov[np.diag_indices_from(cov)] = np.minimum(np.diag(cov) + self._q, np.diag(self._p0))
        px = cov @ xw
        gain = px / (self.scale**2 + float(xw @ px))
        self.theta = np.clip(self.theta + gain * innov, self.lower, self.upper)
        self.cov = cov - np.outer(gain, px)
        self.updates += 1
        return pred

    def recent_mape(self) -> float | None:
        return float(np.mean(self.recent_ape)) if self.recent_ape else None
