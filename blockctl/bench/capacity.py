"""Capacity search: run-level latency SLOs (``ttft-p99=3``); bisection for the highest QPS meeting them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blockctl.bench.metrics import RequestRecord
from blockctl.errors import ConfigError

if TYPE_CHECKING:
    from blockctl.bench.compare import LiveSetup
    from blockctl.bench.steady import ProbeOutcome
    from blockctl.bench.steady_search import PolicyCapacity

METRICS = ("ttft", "e2e", "tpot")
_STAT = re.compile(r"^(mean|p(\d{1,2}(?:\.\d+)?))$")


@dataclass(frozen=True, slots=True)
class Slo:
    """``metric`` (ttft | e2e | tpot) summarised by ``stat`` (mean | pNN) must be ≤ ``limit`` seconds.

    Percentiles use numpy's default (linear interpolation). A request that failed counts as infinitely slow.
    """

    metric: str
    stat: str
    limit: float

    def __str__(self) -> str:
        return f"{self.metric}-{self.stat}={self.limit:g}"

    @property
    def quantile(self) -> float | None:
        """The percentile as a fraction in [0, 1], or None for ``mean``."""
        return None if self.stat == "mean" else float(self.stat[1:]) / 100.0

    def value(self, samples: Sequence[float]) -> float:
        """The statistic over ``samples``; inf (never NaN) when the failed requests' inf reaches it."""
        if not samples:
            return math.inf
        arr = np.sort(np.asarray(samples, dtype=float))
        if self.quantile is None:
            return float(arr.mean())
        # numpy's linear interpolation, written out: between a finite sample and inf it gives inf (numpy's
        # own np.percentile computes inf − x times 0 there, which is NaN).
        h = self.quantile * (len(arr) - 1)
        lo = math.floor(h)
        frac = h - lo
        a = float(arr[lo])
        if frac == 0.0 or math.isinf(a):
            return a
        b = float(arr[lo + 1])
        return math.inf if math.isinf(b) else a + frac * (b - a)

    def holds(self, samples: Sequence[float]) -> bool:
        return self.value(samples) <= self.limit

    def max_violations(self, n: int) -> int | None:
        """How many of ``n`` samples may exceed ``limit`` before a percentile SLO is certainly broken.

        With linear interpolation the pQ value is at least the sorted sample at index ⌊Q(n−1)⌋, so once
        ``n − ⌊Q(n−1)⌋`` samples exceed the limit the SLO cannot hold. None for ``mean`` (no such bound).
        """
        q = self.quantile
        if q is None or n <= 0:
            return None
        return n - math.floor(q * (n - 1)) - 1


def parse_slos(spec: str) -> list[Slo]:
    """Parse ``ttft-p99=3[,e2e-p90=30,...]``; ConfigError names the option and the bad part."""
    slos: list[Slo] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, eq, raw = part.partition("=")
        metric, _, stat = name.strip().partition("-")
        if not eq or metric not in METRICS or not _STAT.match(stat):
            raise ConfigError(
                f"'{part}': expected METRIC-STAT=SECONDS with METRIC in {', '.join(METRICS)} "
                "and STAT mean or pNN (e.g. ttft-p99=3)",
                key="--slo",
            )
        try:
            limit = float(raw)
        except ValueError:
            raise ConfigError(f"'{part}': the limit must be a number of seconds", key="--slo") from None
        if stat.startswith("p") and not 0.0 < float(stat[1:]) <= 100.0:
            raise ConfigError(f"'{part}': the percentile must be in (0, 100]", key="--slo")
        if limit <= 0:
            raise ConfigError(f"'{part}': the limit must be positive", key="--slo")
        slos.append(Slo(metric, stat, limit))
    if not slos:
        raise ConfigError("no SLO given", key="--slo")
    return slos


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """The highest QPS found to meet the SLO (0.0 when even ``min_qps`` fails) and every point tried."""

    capacity: float
    tried: tuple[tuple[float, bool], ...]  # (qps, slo held) in the order evaluated
    capped: bool = False  # the SLO still held at max_qps: the true capacity may be higher


def bisect_capacity(
    holds: Callable[[float], bool],
    *,
    start: float,
    resolution: float,
    min_qps: float | None = None,
    max_qps: float = 1e6,
    rel_resolution: float = 0.0,
    growth: float = 2.0,
) -> CapacityResult:
    """Highest QPS with ``holds(qps)`` true, assuming it is true below some threshold and false above.

    Brackets first (multiplying ``start`` by ``growth`` while it holds, dividing while it fails), then bisects
    until the bracket is narrower than ``resolution`` QPS or ``rel_resolution`` × its lower end; the answer
    is the bracket's lower end, a QPS that was actually run and held. Halving stops at ``min_qps`` (default:
    ``resolution``).
    """
    return search_capacity(
        lambda qs: [holds(q) for q in qs], width=1, start=start, resolution=resolution, min_qps=min_qps,
        max_qps=max_qps, rel_resolution=rel_resolution, growth=growth,
    )


def search_capacity(
    holds_many: Callable[[list[float]], list[bool]],
    *,
    width: int,
    start: float,
    resolution: float,
    min_qps: float | None = None,
    max_qps: float = 1e6,
    rel_resolution: float = 0.0,
    growth: float = 2.0,
    start_held: bool = False,
) -> CapacityResult:
    """``bisect_capacity`` asking ``width`` QPS at a time (``holds_many`` may run them in parallel).

    Brackets with ``width`` geometric steps per round, then splits the bracket into ``width + 1`` equal parts
    per round; with ``width`` 1 it is plain bracketing and bisection. The answer is a QPS that was run and held
    (``start_held``: ``start`` was run and held already; it is not run again).
    """
    if start <= 0 or resolution <= 0 or growth <= 1.0 or width < 1:
        raise ConfigError("start and resolution must be positive, growth above 1", key="--resolution")
    floor = resolution if min_qps is None else min_qps
    tried: list[tuple[float, bool]] = []

    def run(qs: list[float]) -> list[bool]:
        oks = holds_many(qs)
        tried.extend(zip(qs, oks, strict=True))
        return oks

    lo: float | None = None
    hi: float | None = None
    first = min(max(start, floor), max_qps)
    oks = [True] if start_held else run([first])
    if oks[0]:
        lo = first
        while hi is None:
            if lo >= max_qps:
                return CapacityResult(lo, tuple(tried), capped=True)
            ups = _distinct([min(lo * growth**j, max_qps) for j in range(1, width + 1)])
            for q, ok in zip(ups, run(ups), strict=True):
                if not ok:
                    hi = q
                    break
                lo = q
    else:
        hi = first
        while lo is None:
            if hi <= floor:
                return CapacityResult(0.0, tuple(tried))
            downs = _distinct([max(hi / growth**j, floor) for j in range(1, width + 1)])
            for q, ok in zip(downs, run(downs), strict=True):
                if ok:
                    lo = q
                    break
                hi = q
    while hi - lo > max(resolution, rel_resolution * lo):
        step = (hi - lo) / (width + 1)
        mids = [lo + step * j for j in range(1, width + 1)]
        for q, ok in zip(mids, run(mids), strict=True):
            if not ok:
                hi = q
                break
            lo = q
    return CapacityResult(lo, tuple(tried))


def _distinct(qs: list[float]) -> list[float]:
    """Drop repeats (steps clipped at a limit), keeping order."""
    return [q for i, q in enumerate(qs) if i == 0 or q != qs[i - 1]]


def record_samples(records: Sequence[RequestRecord], metric: str) -> list[float]:
    """Per-request ``metric`` (ttft | e2e | tpot) of ``bench run`` records; a failed request counts as inf."""
    out: list[float] = []
    for r in records:
        v = r.ttft_s if metric == "ttft" else r.e2e_s if metric == "e2e" else r.tpot_s
        out.append(math.inf if (v is None or r.error is not None) else v)
    return out


def live_capacities(
    live: LiveSetup,
    policies: Sequence[str],
    slos: Sequence[Slo],
    *,
    resolution: float,
    rel_resolution: float = 0.0,
    start: float = 1.0,
    max_qps: float = 1e6,
    saturation_s: float = 60.0,
    progress: Callable[[str, ProbeOutcome, bool], None] | None = None,
    restart: Callable[[Path, str], object] | None = None,
) -> dict[str, PolicyCapacity]:
    """Steady-state capacity and saturation per policy on the live cluster: its schedulers restarted with each
    policy (``restart``, default :func:`blockctl.cluster.schedulers.restart_schedulers`), one real
    ``bench run`` per probe; saturation probes send ``saturation_s`` seconds of arrivals."""
    import dataclasses

    from blockctl.bench.compare import live_probe
    from blockctl.bench.steady import SATURATION_WARMUP, WARMUP_FRACTION, evaluate
    from blockctl.bench.steady_search import Plan, find_capacity, find_saturation

    if restart is None:
        from blockctl.cluster.schedulers import restart_schedulers

        restart = restart_schedulers
    plan = Plan(start=start, resolution=resolution, rel_resolution=rel_resolution, max_qps=max_qps)
    short = dataclasses.replace(live, duration=saturation_s)
    found: dict[str, PolicyCapacity] = {}
    for policy in policies:
        restart(live.state_dir, policy)

        def probe(qps: float, saturation: bool, policy: str = policy) -> ProbeOutcome:
            result = live_probe(short if saturation else live, policy, qps)
            recs = result.records
            finishes = [None if r.error is not None or r.e2e_s is None or r.sent_s is None else r.sent_s + r.e2e_s
                        for r in recs]
            out = evaluate(qps, [r.scheduled_s for r in recs], finishes,
                           {s: record_samples(recs, s.metric) for s in slos},
                           warmup=SATURATION_WARMUP if saturation else WARMUP_FRACTION)
            if progress is not None:
                progress(policy, out, saturation)
            return out

        found[policy] = find_capacity(probe, plan, find_saturation(probe, plan))
    return found
