"""From a tagger's typical length to the mean length routing needs (pure; no torch).

The tagger regresses log(1 + tokens), so it predicts about the typical (median) reply. That is the right
aim for an error metric such as MAE. Load forecasting sums work, so it needs the mean. Output lengths have
a long right tail, so the mean is larger: on ShareGPT, prompts tagged 9 tokens average 40, and those tagged
54 average 143. ``Calibration`` maps a prediction to the mean true length of validation prompts with
predictions like it. Bins are quantiles of the predictions, and the means are made non-decreasing, so a
longer tag never maps to a shorter mean.

Each bin also keeps ``QUANTILES`` quantiles of those true lengths: the calibrated distribution of the reply
length given the tag (``blockctl.predict.lengths``), which the router passes on and the agent uses to
expect the rest of a running reply given its age. Its P10–P90 interval is checked on the held-out test split
(``tagger eval``).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blockctl.errors import TaggerError

QUANTILES = 32  # per bin: as many as blockctl.predict.lengths.DEFAULT_QUANTILES


@dataclass(frozen=True, slots=True)
class Calibration:
    """``edges[i]`` is the largest prediction of bin i (the last bin is open-ended); ``means[i]`` its mean."""

    edges: tuple[int, ...]
    means: tuple[float, ...]
    quantiles: tuple[tuple[int, ...], ...] = ()  # per bin, QUANTILES quantiles of the true lengths; () none

    def __call__(self, predicted: int) -> int:
        return max(1, round(self.means[self.bin(predicted)]))

    def bin(self, predicted: int) -> int:
        return min(bisect.bisect_left(self.edges, predicted), len(self.means) - 1)

    def atoms(self, predicted: int) -> tuple[int, ...] | None:
        """The calibrated length distribution of a prompt tagged ``predicted`` (None: not fitted)."""
        return self.quantiles[self.bin(predicted)] if self.quantiles else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": "mean true tokens per quantile bin of predictions",
                               "edges": list(self.edges), "means": list(self.means)}
        if self.quantiles:
            out["quantiles"] = [list(q) for q in self.quantiles]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Calibration | None:
        """None for an empty mapping (a tagger saved without calibration)."""
        if not raw:
            return None
        try:
            edges, means = tuple(int(e) for e in raw["edges"]), tuple(float(m) for m in raw["means"])
            quantiles = tuple(tuple(int(a) for a in q) for q in raw.get("quantiles", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise TaggerError(f"calibration: expected edges and means lists ({exc})") from None
        if len(means) != len(edges) + 1 or list(edges) != sorted(edges):
            raise TaggerError("calibration: need sorted edges and one more mean than edges")
        if quantiles and (len(quantiles) != len(means) or not all(quantiles)):
            raise TaggerError("calibration: need one non-empty quantile list per bin")
        return cls(edges, means, quantiles)


def fit(predicted: Sequence[int], actual: Sequence[int], bins: int = 10) -> Calibration:
    """Quantile bins of ``predicted`` (ties kept in one bin), each mapped to the mean of ``actual`` in it."""
    if len(predicted) != len(actual) or not predicted:
        raise TaggerError("calibration needs as many true lengths as predictions, and at least one")
    pairs = sorted(zip(predicted, actual, strict=True))
    n = len(pairs)
    edges: list[int] = []
    for k in range(1, bins):
        edge = pairs[max(0, k * n // bins - 1)][0]  # the last prediction of the k-th quantile bin
        if (not edges or edge > edges[-1]) and edge < pairs[-1][0]:
            edges.append(edge)
    sums = [0.0] * (len(edges) + 1)
    counts = [0] * (len(edges) + 1)
    for p, a in pairs:
        i = bisect.bisect_left(edges, p)
        sums[i] += a
        counts[i] += 1
    means: list[float] = []
    for s, c in zip(sums, counts, strict=True):
        mean = s / c if c else (means[-1] if means else 1.0)
        means.append(max(mean, means[-1]) if means else mean)
    members: list[list[int]] = [[] for _ in means]
    for p, a in pairs:
        members[bisect.bisect_left(edges, p)].append(a)
    qs: list[tuple[int, ...]] = []
    for m in members:  # an empty bin borrows its neighbour's
        qs.append(length_quantiles(m) if m else (qs[-1] if qs else (1,)))
    return Calibration(tuple(edges), tuple(means), tuple(qs))


def interval_coverage(
    calibration: Calibration, predicted: Sequence[int], actual: Sequence[int], lo: float = 0.1, hi: float = 0.9
) -> dict[str, float] | None:
    """Share of ``actual`` lengths inside their calibrated [``lo``, ``hi``] quantile interval (on held-out
    prompts this should be ``hi`` − ``lo``), and the interval's median width in tokens; None without
    quantiles."""
    from blockctl.predict.lengths import dist

    if not calibration.quantiles or not predicted:
        return None
    inside = 0
    widths = []
    for p, a in zip(predicted, actual, strict=True):
        atoms = calibration.atoms(p)
        assert atoms is not None
        d = dist(atoms)
        low, high = d.quantile(lo), d.quantile(hi)
        inside += low <= a <= high
        widths.append(high - low)
    widths.sort()
    return {"lo": lo, "hi": hi, "coverage": inside / len(predicted), "median_width": widths[len(widths) // 2]}


def length_quantiles(values: list[int], k: int = QUANTILES) -> tuple[int, ...]:
    """``k`` quantiles of ``values`` at probabilities (i + ½)/k, linear between order statistics."""
    v = sorted(values)
    n = len(v)
    out = []
    for i in range(k):
        x = (i + 0.5) / k * n - 0.5
        lo = min(n - 1, max(0, int(x)))
        hi = min(n - 1, lo + 1)
        frac = min(1.0, max(0.0, x - lo))
        out.append(max(1, round(v[lo] + frac * (v[hi] - v[lo]))))
    return tuple(out)
