"""Per-request benchmark records and the pure statistics over them (percentiles, throughput, goodput, CDFs).

Both the live load generator and the cluster simulator produce ``RequestRecord``s, so one summary, one
report and one set of plots serve both. Definitions follow vLLM's ``benchmark_serving``:

- TTFT: send to first content token; E2E: send to last token; ITL: gaps between content chunks;
- TPOT: (E2E − TTFT) / (output tokens − 1), for requests with more than one output token;
- goodput (DistServe): requests per second that finished *and* met every per-request SLO given;
- throughput: completed requests (or tokens) per second of the run's duration, first send to last finish.
Percentiles are numpy's linear interpolation. Failed requests are counted, listed by error, and excluded
from latency statistics (a failure is not a latency).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from blockctl.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request. Times are seconds; ``*_s`` offsets are from the run's start.

    NOTE: ``error`` is None exactly when the request succeeded; a failed request keeps whatever timing it
    got (e.g. ``ttft_s`` when the stream broke midway) but is left out of latency statistics.
    """

    index: int  # position in the workload
    prompt_tokens: int
    output_tokens: int  # tokens actually received (usage if the server reports it, else content chunks)
    expected_output_tokens: int | None = None  # the workload's reference length
    scheduled_s: float = 0.0  # when the arrival process said to send it
    sent_s: float | None = None  # when it was actually sent (lateness = sent_s - scheduled_s)
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: tuple[float, ...] = ()  # inter-token latencies, one per chunk with choices after the first (vLLM's rule)
    instance: str | None = None  # who served it (x-blockctl-instance), when known
    predicted_e2e_s: float | None = None  # the scheduler's prediction (x-blockctl-predicted-e2e-ms)
    predicted_output_tokens: int | None = None  # the length the scheduler assumed
    length_source: str | None = None  # where it came from: header | tagger | ignore_eos | fallback
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def lateness_s(self) -> float | None:
        return None if self.sent_s is None else self.sent_s - self.scheduled_s

    def to_dict(self) -> dict[str, Any]:
        # every field is a scalar but itl_s: a flat copy, not dataclasses.asdict's deep recursion (10× slower,
        # seconds for the simulator's tens of thousands of records)
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["itl_s"] = [round(x, 6) for x in self.itl_s]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["itl_s"] = tuple(float(x) for x in known.get("itl_s", ()))
        return cls(**known)


@dataclass(frozen=True, slots=True)
class RequestSlo:
    """Per-request limits in seconds (None = no limit); a request is *good* when it meets all of them."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None

    def met(self, r: RequestRecord) -> bool:
        if not r.ok:
            return False
        checks = ((self.ttft, r.ttft_s), (self.tpot, r.tpot_s), (self.e2e, r.e2e_s))
        return all(value is not None and value <= limit for limit, value in checks if limit is not None)

    def __str__(self) -> str:
        return ",".join(
            f"{k}={v:g}" for k, v in (("ttft", self.ttft), ("tpot", self.tpot), ("e2e", self.e2e)) if v is not None
        )


def parse_request_slo(spec: str) -> RequestSlo:
    """``ttft=0.5,tpot=0.05,e2e=20`` (seconds, or with an ``ms`` suffix) → RequestSlo; else ConfigError."""
    limits: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, eq, raw = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in ("ttft", "tpot", "e2e"):
            raise ConfigError(f"'{part}': expected ttft=S, tpot=S or e2e=S (seconds)", key="--slo")
        raw = raw.strip().lower()
        scale = 1e-3 if raw.endswith("ms") else 1.0
        raw = raw.removesuffix("ms").removesuffix("s")
        try:
            value = float(raw) * scale
        except ValueError:
            raise ConfigError(f"'{part}': the limit must be a number of seconds", key="--slo") from None
        if not value > 0 or math.isinf(value):
            raise ConfigError(f"'{part}': the limit must be a positive number", key="--slo")
        limits[key] = value
    if not limits:
        raise ConfigError("no SLO given (e.g. ttft=0.5,tpot=0.05)", key="--slo")
    return RequestSlo(**limits)


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of one latency metric over the successful requests (seconds); NaN when there are none."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if len(values) == 0:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan)
        arr = np.asarray(values, dtype=float)
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(len(arr), float(arr.mean()), float(p50), float(p90), float(p99), float(arr.max()))


@dataclass(frozen=True, slots=True)
class Summary:
    """A run in numbers. Rates are per second of ``duration_s``."""

    requests: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    output_token_throughput: float
    total_token_throughput: float
    ttft: Stats
    tpot: Stats
    itl: Stats
    e2e: Stats
    lateness: Stats  # how late requests were sent versus the arrival schedule (the generator's own lag)
    goodput: float | None = None  # good requests per second, when an SLO was given
    slo_attainment: float | None = None  # fraction of all requests that were good
    errors: dict[str, int] = field(default_factory=dict)  # error message -> count
    prefix_cache_hit_rate: float | None = None  # engines' prefix_cache_hits / queries (tokens), when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        fields: dict[str, Any] = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("ttft", "tpot", "itl", "e2e", "lateness"):
            raw: dict[str, Any] = {f: math.nan if v is None else v for f, v in d[k].items()}
            fields[k] = Stats(**raw)
        return cls(**fields)


def duration_of(records: Iterable[RequestRecord]) -> float:
    """First send to last finish (any request that got an answer); 0.0 when nothing was sent."""
    starts = [r.sent_s for r in records if r.sent_s is not None]
    ends = [r.sent_s + r.e2e_s for r in records if r.sent_s is not None and r.e2e_s is not None]
    if not starts or not ends:
        return 0.0
    return max(0.0, max(ends) - min(starts))


def summarize(
    records: Sequence[RequestRecord], *, slo: RequestSlo | None = None, duration_s: float | None = None
) -> Summary:
    """Statistics of a run; ``duration_s`` defaults to :func:`duration_of` the records."""
    done = [r for r in records if r.ok]
    duration = duration_of(records) if duration_s is None else duration_s
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: math.nan)
    out_tokens = sum(r.output_tokens for r in done)
    in_tokens = sum(r.prompt_tokens for r in done)
    good = sum(1 for r in records if slo.met(r)) if slo is not None else None
    return Summary(
        requests=len(records),
        completed=len(done),
        failed=len(records) - len(done),
        duration_s=duration,
        request_throughput=rate(len(done)),
        output_token_throughput=rate(out_tokens),
        total_token_throughput=rate(out_tokens + in_tokens),
        ttft=Stats.of([r.ttft_s for r in done if r.ttft_s is not None]),
        tpot=Stats.of([t for r in done if (t := r.tpot_s) is not None]),
        itl=Stats.of([x for r in done for x in r.itl_s]),
        e2e=Stats.of([r.e2e_s for r in done if r.e2e_s is not None]),
        lateness=Stats.of([x for r in records if (x := r.lateness_s) is not None]),
        goodput=None if good is None else rate(good),
        slo_attainment=None if good is None or not records else good / len(records),
        errors=dict(Counter(r.error for r in records if r.error is not None).most_common()),
    )


def cdf_points(values: Sequence[float], max_points: int = 512) -> tuple[list[float], list[float]]:
    """Empirical CDF as (sorted values, fractions ≤ value), thinned to at most ``max_points`` points."""
    arr = np.sort(np.asarray(values, dtype=float))
    n = len(arr)
    if n == 0:
        return [], []
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return arr[idx].tolist(), ((idx + 1) / n).tolist()


def metric_values(records: Sequence[RequestRecord], metric: str) -> list[float]:
    """The successful requests' values of ``metric``: ttft | tpot | e2e | itl (seconds)."""
    done = [r for r in records if r.ok]
    if metric == "ttft":
        return [r.ttft_s for r in done if r.ttft_s is not None]
    if metric == "e2e":
        return [r.e2e_s for r in done if r.e2e_s is not None]
    if metric == "tpot":
        return [t for r in done if (t := r.tpot_s) is not None]
    if metric == "itl":
        return [x for r in done for x in r.itl_s]
    raise ConfigError(f"unknown metric '{metric}' (valid: ttft, tpot, e2e, itl)")
