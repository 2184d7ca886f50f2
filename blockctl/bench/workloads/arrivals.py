"""Arrival processes: request send times (seconds from the start) for open-loop load generation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blockctl.errors import ConfigError, WorkloadError

PROCESSES = ("poisson", "gamma", "constant", "trace")


def arrival_times(
    process: str,
    n: int,
    *,
    qps: float,
    burstiness: float = 1.0,
    seed: int = 0,
    timestamps: Sequence[float | None] | None = None,
    time_scale: float = 1.0,
) -> np.ndarray:
    """Offsets in seconds (the earliest is 0) at which to send ``n`` requests, one per request in order.

    - ``poisson``: exponential gaps with mean 1/qps; ``qps=inf`` sends everything at once.
    - ``gamma``: vLLM's convention: gaps ~ Gamma(shape=burstiness, scale=1/(qps*burstiness)), so the mean
      rate is qps and the gaps' coefficient of variation is 1/sqrt(burstiness); burstiness 1 is Poisson,
      below 1 is burstier.
    - ``constant``: one request every 1/qps seconds.
    - ``trace``: the workload's own timestamps (file readers sort by them), shifted to start at 0 and
      multiplied by ``time_scale`` (0.5 replays twice as fast); ``qps`` is ignored.
    """
    if n <= 0:
        return np.zeros(0)
    if process == "trace":
        return _trace(n, timestamps, time_scale)
    if process not in PROCESSES:
        raise WorkloadError(f"unknown arrival process '{process}' (valid: {', '.join(PROCESSES)})")
    if not qps > 0:
        raise WorkloadError(f"--qps must be > 0 (got {qps})")
    if math.isinf(qps):
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    if process == "poisson":
        gaps = rng.exponential(1.0 / qps, n - 1)
    elif process == "gamma":
        if not burstiness > 0:
            raise WorkloadError(f"burstiness must be > 0 (got {burstiness})")
        gaps = rng.gamma(burstiness, 1.0 / (qps * burstiness), n - 1)
    else:
        gaps = np.full(n - 1, 1.0 / qps)
    return np.concatenate(([0.0], np.cumsum(gaps)))


def _trace(n: int, timestamps: Sequence[float | None] | None, time_scale: float) -> np.ndarray:
    hint = "use --arrival poisson or gamma:B, or a workload with time stamps (burstgpt, a trace CSV, JSONL)"
    if timestamps is None or len(timestamps) < n:
        raise WorkloadError("trace arrivals need a time stamp for every request; this workload has none", hint=hint)
    if not time_scale > 0:
        raise WorkloadError(f"trace time scale must be > 0 (got {time_scale})")
    stamps = list(timestamps[:n])
    if any(t is None for t in stamps):
        raise WorkloadError("trace arrivals need a time stamp for every request; some have none", hint=hint)
    arr = np.asarray(stamps, dtype=float)
    out: np.ndarray = (arr - arr.min()) * time_scale
    return out


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """A parsed ``--arrival``: an open-loop process, or closed-loop ``concurrency`` workers (process None)."""

    process: str | None  # poisson | gamma | constant | trace; None with concurrency
    burstiness: float = 1.0
    time_scale: float = 1.0
    concurrency: int | None = None


def parse_arrival(spec: str) -> ArrivalSpec:
    """``poisson``, ``gamma:B``, ``constant``, ``trace[:SCALE]`` or ``concurrency:N``; else ConfigError."""
    name, _, arg = spec.strip().lower().partition(":")
    try:
        if name in ("poisson", "constant") and not arg:
            return ArrivalSpec(name)
        if name == "gamma":
            b = float(arg) if arg else 1.0
            if b > 0 and math.isfinite(b):
                return ArrivalSpec("gamma", burstiness=b)
        elif name == "trace":
            scale = float(arg) if arg else 1.0
            if scale > 0 and math.isfinite(scale):
                return ArrivalSpec("trace", time_scale=scale)
        elif name == "concurrency":
            n = int(arg)
            if n >= 1:
                return ArrivalSpec(None, concurrency=n)
    except ValueError:
        pass
    raise ConfigError(
        f"'{spec}': expected poisson, gamma:BURSTINESS (> 0), constant, trace[:TIME_SCALE] or concurrency:N",
        key="--arrival",
    )
