"""Fitting the step-time model to measured step rows, and cross-validating it on rows it never saw."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blockctl.engine.steptime import StepTimeParams
from blockctl.engine.types import StepShape
from blockctl.errors import ProfileError

_FitArray = NDArray[np.float64]
Fitter = Callable[[Sequence["MeasuredRow"]], StepTimeParams]

# Starting point and bounds of the fit, in StepTimeParams field order.
_X0 = [1.0, 5.0, 0.02, 3.0, 3.0, 0.5, 0.1, 1.0, 0.1]
_LOWER = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
_UPPER = [100.0, 100.0, 10.0, 20.0, 1000.0, 100.0, 100.0, 1000.0, 100.0]
KFOLD = 5


@dataclass(frozen=True, slots=True)
class MeasuredRow:
    """One measured step: a prefill chunk of one sequence plus ``decode_batch`` sequences decoding, each
    attending to ``decode_context`` cached tokens; times in milliseconds (no per-step CPU overhead)."""

    prefill_tokens: int
    prefill_cached: int
    decode_batch: int
    decode_context: int
    ms_median: float
    ms_min: float
    ms_max: float

    def shape(self) -> StepShape:
        return row_shape(self.prefill_tokens, self.prefill_cached, self.decode_batch, self.decode_context)

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str, index: int) -> MeasuredRow:
        try:
            row = cls(
                prefill_tokens=int(d["prefill_tokens"]), prefill_cached=int(d.get("prefill_cached", 0)),
                decode_batch=int(d["decode_batch"]), decode_context=int(d.get("decode_context", 0)),
                ms_median=float(d["ms_median"]), ms_min=float(d.get("ms_min", d["ms_median"])),
                ms_max=float(d.get("ms_max", d["ms_median"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{source}: rows[{index}] is malformed ({exc!r})") from None
        ints = (row.prefill_tokens, row.prefill_cached, row.decode_batch, row.decode_context)
        if min(ints) < 0 or row.prefill_tokens + row.decode_batch == 0:
            raise ProfileError(f"{source}: rows[{index}] must have non-negative sizes and at least one token")
        if not (0 < row.ms_min <= row.ms_median <= row.ms_max and math.isfinite(row.ms_max)):
            raise ProfileError(f"{source}: rows[{index}] needs 0 < ms_min <= ms_median <= ms_max")
        return row


def row_shape(prefill_tokens: int, prefill_cached: int, decode_batch: int, decode_context: int) -> StepShape:
    """The StepShape of a profile-style step (one prefill chunk; ``decode_context`` is per sequence)."""
    has_prefill = prefill_tokens > 0
    return StepShape(
        prefill_tokens=prefill_tokens,
        prefill_seqs=1 if has_prefill else 0,
        prefill_attn=prefill_tokens * (prefill_cached + (prefill_tokens + 1) / 2) if has_prefill else 0.0,
        decode_batch=decode_batch,
        decode_context=decode_batch * decode_context,
        prefill_cached=prefill_cached if has_prefill else 0,
    )


def _features(rows: Sequence[MeasuredRow]) -> _FitArray:
    shapes = [r.shape() for r in rows]
    return np.array(
        [[s.prefill_tokens + s.decode_batch, s.prefill_attn, s.prefill_cached, s.decode_context,
          s.prefill_seqs + s.decode_batch, 1.0 if s.prefill_seqs and s.decode_batch else 0.0] for s in shapes],
        dtype=np.float64,
    )


def _predict(theta: _FitArray, f: _FitArray) -> _FitArray:
    const, mem, slope, pw, ka, kc, kd, kr, kmix = theta
    lin = (mem**pw + (slope * f[:, 0]) ** pw) ** (1.0 / pw)
    out: _FitArray = const + lin + ka * f[:, 1] * 1e-6 + kc * f[:, 2] * 1e-3 + kd * f[:, 3] * 1e-3 \
        + kr * f[:, 4] * 1e-3 + kmix * f[:, 5]
    return out


_MAX_NFEV: int | None = None  # least_squares' own default (100 evaluations per parameter)
_MORE_NFEV = 5000


def fit_params(rows: Sequence[MeasuredRow]) -> StepTimeParams:
    """Least-squares fit of relative error, every coefficient bounded below by 0."""
    from scipy.optimize import least_squares

    if len(rows) < 12:
        raise ProfileError(f"need at least 12 measured rows to fit the step-time model, got {len(rows)}")
    f = _features(rows)
    y = np.array([r.ms_median for r in rows], dtype=np.float64)

    def residual(theta: _FitArray) -> _FitArray:
        return (_predict(theta, f) - y) / y

    bounds = (np.array(_LOWER), np.array(_UPPER))
    res = least_squares(residual, np.array(_X0), bounds=bounds, x_scale="jac", max_nfev=_MAX_NFEV)
    if res.status == 0:
        # Out of evaluations, which noisy timings (a busy host) can cause: go on from where it stopped with a
        # larger budget, and keep the best point found even then (the profile's cross-validation says how good).
        res = least_squares(residual, res.x, bounds=bounds, x_scale="jac", max_nfev=_MORE_NFEV)
    if res.status < 0 or not np.all(np.isfinite(res.x)):
        raise ProfileError(f"the step-time fit did not converge: {res.message}")
    return StepTimeParams(*(float(v) for v in res.x))


def predict_rows(params: StepTimeParams, rows: Sequence[MeasuredRow]) -> list[float]:
    """Model GPU milliseconds for each row (what the rows measured)."""
    return [float(v) for v in _predict(np.array(params.as_vector()), _features(rows))]


def mape_pct(params: StepTimeParams, rows: Sequence[MeasuredRow]) -> float:
    pred = predict_rows(params, rows)
    errors = [abs(p - r.ms_median) / r.ms_median for p, r in zip(pred, rows, strict=True)]
    return 100.0 * float(np.mean(errors))


# Regions held out whole in leave-one-region-out: the extremes of each grid axis, where the model must
# extrapolate rather than interpolate.
def _regions(rows: Sequence[MeasuredRow]) -> dict[str, Callable[[MeasuredRow], bool]]:
    max_p = max(r.prefill_tokens for r in rows)
    max_b = max(r.decode_batch for r in rows)
    max_ctx = max(r.decode_context for r in rows)
    return {
        f"prefill_tokens={max_p}": lambda r: r.prefill_tokens == max_p,
        f"decode_batch={max_b}": lambda r: r.decode_batch == max_b,
        f"decode_context={max_ctx}": lambda r: r.decode_context == max_ctx and r.decode_batch > 0,
        "decode_only": lambda r: r.prefill_tokens == 0,
    }


@dataclass(frozen=True, slots=True)
class FitReport:
    """A fitted model with its training error and cross-validated errors (MAPE, percent)."""

    params: StepTimeParams
    train_mape_pct: float
    kfold_mape_pct: float
    kfold_k: int
    loro_mape_pct: dict[str, float] = field(default_factory=dict)
    rel_noise: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params.to_dict(),
            "rel_noise": self.rel_noise,
            "train_mape_pct": self.train_mape_pct,
            "cv": {"kfold_k": self.kfold_k, "kfold_mape_pct": self.kfold_mape_pct,
                   "leave_one_region_out_mape_pct": dict(self.loro_mape_pct)},
        }


def kfold_mape(rows: Sequence[MeasuredRow], k: int = KFOLD, seed: int = 0, fitter: Fitter | None = None) -> float:
    """Mean absolute percentage error of every row, predicted by a fit on the other k-1 folds."""
    order = np.random.default_rng(seed).permutation(len(rows))
    errors: list[float] = []
    for fold in np.array_split(order, k):
        held = set(int(i) for i in fold)
        params = (fitter or fit_params)([r for i, r in enumerate(rows) if i not in held])
        test = [rows[i] for i in sorted(held)]
        pred = predict_rows(params, test)
        errors += [abs(p - r.ms_median) / r.ms_median for p, r in zip(pred, test, strict=True)]
    return 100.0 * float(np.mean(errors))


def loro_mape(rows: Sequence[MeasuredRow], fitter: Fitter | None = None) -> dict[str, float]:
    """MAPE on each extreme region when the fit never saw any row of it."""
    out: dict[str, float] = {}
    for name, inside in _regions(rows).items():
        test = [r for r in rows if inside(r)]
        train = [r for r in rows if not inside(r)]
        if test and len(train) >= 12:
            out[name] = mape_pct((fitter or fit_params)(train), test)
    return out


def relative_noise(rows: Sequence[MeasuredRow]) -> float:
    """Relative standard deviation of one step's time, from the min/max spread of the replays.

    The range of n≈15 normal draws is about 3.5 standard deviations; the mean over rows is taken.
    """
    return float(np.mean([(r.ms_max - r.ms_min) / 3.5 / r.ms_median for r in rows]))


def fit_report(rows: Sequence[MeasuredRow], *, cross_validate: bool = True, fitter: Fitter | None = None) -> FitReport:
    """``fitter`` (default :func:`fit_params`) fits the model; cross-validation refits with it."""
    params = (fitter or fit_params)(rows)
    return FitReport(
        params=params,
        train_mape_pct=mape_pct(params, rows),
        kfold_mape_pct=kfold_mape(rows, fitter=fitter) if cross_validate else float("nan"),
        kfold_k=KFOLD,
        loro_mape_pct=loro_mape(rows, fitter=fitter) if cross_validate else {},
        rel_noise=relative_noise(rows),
    )
