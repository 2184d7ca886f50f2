"""Agreement between two measured grids, per region of the grid (e.g. a new profile against a seed profile)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from blockctl.engine.fit import MeasuredRow

Key = tuple[int, int, int, int]


def region(row: MeasuredRow) -> str:
    """Decode-only steps, prefill-only steps, and mixed steps split by chunk size (small ≤ 256 < large)."""
    if row.prefill_tokens == 0:
        return "decode only"
    if row.decode_batch == 0:
        return "prefill only"
    return "mixed, chunk ≤ 256" if row.prefill_tokens <= 256 else "mixed, chunk > 256"


@dataclass(frozen=True, slots=True)
class RegionAgreement:
    region: str
    steps: int
    median_abs_pct: float  # median |ours − reference| / reference, in %
    max_abs_pct: float
    mean_signed_pct: float  # > 0: ours is slower


def agreement(ours: Sequence[MeasuredRow], reference: Sequence[MeasuredRow]) -> list[RegionAgreement]:
    """Compare medians on the steps both grids measured; regions in a fixed order, empty ones left out."""
    ref: dict[Key, MeasuredRow] = {_key(r): r for r in reference}
    diffs: dict[str, list[float]] = {}
    for row in ours:
        other = ref.get(_key(row))
        if other is None or other.ms_median <= 0:
            continue
        diffs.setdefault(region(row), []).append((row.ms_median - other.ms_median) / other.ms_median * 100)
    order = ["decode only", "prefill only", "mixed, chunk ≤ 256", "mixed, chunk > 256"]
    return [
        RegionAgreement(
            region=name,
            steps=len(d),
            median_abs_pct=statistics.median(abs(x) for x in d),
            max_abs_pct=max(abs(x) for x in d),
            mean_signed_pct=statistics.fmean(d),
        )
        for name in order
        if (d := diffs.get(name))
    ]


def _key(row: MeasuredRow) -> Key:
    return (row.prefill_tokens, row.prefill_cached, row.decode_batch, row.decode_context)
