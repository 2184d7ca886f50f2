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

from blockctl.promexpo import Families

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

    def render(self, f: Families, name: str, help_rel: str, help_abs: str) -> None:
        f.histogram(f"{name}_relative_error", help_rel, REL_BUCKETS, self.counts, self.sum_rel)
        quantiles = [(q, float("nan") if (v := self.quantile(q)) is None else v) for q in QUANTILES]
        f.summary(f"{name}_abs_pct_error", help_abs, quantiles, self.total, self.sum_abs_pct)

    def summary(self) -> dict[str, float | int | None]:
        return {
            "count": self.total,
            "mape_pct": self.mape(),
            "bias_pct": 100 * self.sum_rel / self.total if self.total else None,
            "p50_ape_pct": self.quantile(0.5),
            "p90_ape_pct": self.quantile(0.9),
        }


@dataclass(slots=True)
class PredictionErrors:
    """The dispatch-time prediction's errors, and its decode part's error split in two: ``decode`` (predicted
    E2E − TTFT against the time from first to last token) and ``decode_given_batches`` (the same time as the
    step model prices the steps the request actually ran in, learn.py: the model's share of ``decode``; the
    rest is the traffic that came after the prediction)."""

    ttft: ErrorStats = field(default_factory=ErrorStats)
    e2e: ErrorStats = field(default_factory=ErrorStats)
    decode: ErrorStats = field(default_factory=ErrorStats)
    decode_given_batches: ErrorStats = field(default_factory=ErrorStats)

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        return {"ttft": self.ttft.summary(), "e2e": self.e2e.summary(), "decode": self.decode.summary(),
                "decode_given_batches": self.decode_given_batches.summary()}

    def render(self, f: Families) -> None:
        self.ttft.render(
            f,
            "blockctl_agent_ttft",
            "(predicted - actual) / actual TTFT of completed streaming requests.",
            "Absolute % TTFT error, quantiles over the last 1000 completed streaming requests.",
        )
        self.e2e.render(
            f,
            "blockctl_agent_e2e",
            "(predicted - actual) / actual end-to-end latency of completed requests.",
            "Absolute % E2E error, quantiles over the last 1000 completed requests.",
        )
        self.decode.render(
            f,
            "blockctl_agent_decode",
            "(predicted - actual) / actual time from first to last token of completed streaming requests.",
            "Absolute % decode-time error, quantiles over the last 1000 completed streaming requests.",
        )
        self.decode_given_batches.render(
            f,
            "blockctl_agent_decode_given_batches",
            "(priced - actual) / actual decode time, the step model pricing the steps each request ran in.",
            "Absolute % decode-time error given the batches, quantiles over the last 1000 scored requests.",
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
