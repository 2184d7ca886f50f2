"""Predicted-vs-actual error of completed requests, kept as Prometheus histograms and a windowed summary.

The prediction compared is the one made at dispatch: the scheduler's, when it passes both
``x-blockctl-predicted-ttft-ms`` and ``x-blockctl-predicted-e2e-ms`` (what ``/predict`` told it), else the
agent's own what-if at arrival (what ``/predict`` would have answered then), so traffic that bypassed a
scheduler is scored too. Relative error is ``(predicted - actual) / actual``: positive means the agent
was pessimistic. TTFT is scored only for streaming requests (a non-streaming first token is unseen).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

REL_BUCKETS = (-0.5, -0.25, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
WINDOW = 1000  # completed requests the quantile summary covers
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(slots=True)
class ErrorStats:
    """One error series: cumulative histogram of relative error plus a window of absolute % errors."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(REL_BUCKETS) + 1))
    total: int = 0
    sum_rel: float = 0.0
    sum_abs_pct: float = 0.0
    window: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def observe(self, predicted: float, actual: float) -> None:
        if actual <= 0:
            return
        rel = (predicted - actual) / actual
        i = 0
        while i < len(REL_BUCKETS) and rel > REL_BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.total += 1
        self.sum_rel += rel
        self.sum_abs_pct += abs(rel) * 100
        self.window.append(abs(rel) * 100)

    def mape(self) -> float | None:
        return self.sum_abs_pct / self.total if self.total else None

    def quantile(self, q: float) -> float | None:
        if not self.window:
            return None
        ordered = sorted(self.window)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def render(self, name: str, help_rel: str, help_abs: str) -> list[str]:
        lines = [f"# HELP {name}_relative_error {help_rel}", f"# TYPE {name}_relative_error histogram"]
        cum = 0
        for bound, n in zip(REL_BUCKETS, self.counts, strict=False):
            cum += n
            lines.append(f'{name}_relative_error_bucket{{le="{bound}"}} {cum}')
        lines.append(f'{name}_relative_error_bucket{{le="+Inf"}} {self.total}')
        lines.append(f"{name}_relative_error_sum {self.sum_rel}")
        lines.append(f"{name}_relative_error_count {self.total}")
        lines += [f"# HELP {name}_abs_pct_error {help_abs}", f"# TYPE {name}_abs_pct_error summary"]
        for q in QUANTILES:
            v = self.quantile(q)
            lines.append(f'{name}_abs_pct_error{{quantile="{q}"}} {"NaN" if v is None else v}')
        lines.append(f"{name}_abs_pct_error_sum {self.sum_abs_pct}")
        lines.append(f"{name}_abs_pct_error_count {self.total}")
        return lines

    def summary(self) -> dict[str, float | int | None]:
        return {
            "count": self.total,
            "mape_pct": self.mape(),
            "p50_ape_pct": self.quantile(0.5),
            "p90_ape_pct": self.quantile(0.9),
        }


@dataclass(slots=True)
class PredictionErrors:
    ttft: ErrorStats = field(default_factory=ErrorStats)
    e2e: ErrorStats = field(default_factory=ErrorStats)

    def render(self) -> list[str]:
        return self.ttft.render(
            "blockctl_agent_ttft",
            "(predicted - actual) / actual TTFT of completed streaming requests.",
            "Absolute % TTFT error, quantiles over the last 1000 completed streaming requests.",
        ) + self.e2e.render(
            "blockctl_agent_e2e",
            "(predicted - actual) / actual end-to-end latency of completed requests.",
            "Absolute % E2E error, quantiles over the last 1000 completed requests.",
        )


CALIBRATION_WINDOW = 64  # completed streaming requests a calibration covers


@dataclass(slots=True)
class RobustEstimate:
    """The median of the last ``CALIBRATION_WINDOW`` samples, each clamped to ``[lo, hi]``; ``value`` is
    ``default`` until the first sample. The median shrugs off the occasional stall of a loaded host."""

    lo: float
    hi: float
    value: float
    window: deque[float] = field(default_factory=lambda: deque(maxlen=CALIBRATION_WINDOW))

    def observe(self, sample: float) -> None:
        self.window.append(min(self.hi, max(self.lo, sample)))
        ordered = sorted(self.window)
        mid = len(ordered) // 2
        self.value = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(slots=True)
class Calibration:
    """What the engine model does not see, learned from completed streaming requests.

    * ``overhead_s``: additive latency before the first token (HTTP hops, tokenization), from
      ``actual TTFT - raw predicted TTFT``, clamped to [0, 0.5 s] (beyond that it is queueing the model
      missed, not overhead). Added to TTFT and E2E.
    * ``tpot_factor``: actual over predicted time per output token after the first, clamped to [0.5, 3].
      It captures what a what-if from a snapshot cannot: requests that arrive later join the batch and
      slow every decode step (and a host that runs slower than its profile). It scales the decode part of
      E2E. Per token, so a wrong length prediction does not leak into it.
    """

    overhead: RobustEstimate = field(default_factory=lambda: RobustEstimate(0.0, 0.5, 0.0))
    tpot: RobustEstimate = field(default_factory=lambda: RobustEstimate(0.5, 3.0, 1.0))

    def apply(
        self, raw_ttft_s: float, raw_e2e_s: float, wait_s: float, overhead_s: float | None = None
    ) -> tuple[float, float]:
        """Calibrated (ttft, e2e) from the raw what-if and the expected wait for the step in progress;
        ``overhead_s`` replaces the learned median overhead (the online learner's, see learn.py)."""
        ttft = raw_ttft_s + wait_s + (self.overhead.value if overhead_s is None else overhead_s)
        return ttft, ttft + self.tpot.value * (raw_e2e_s - raw_ttft_s)
