"""Side-by-side tables of benchmark results (one column per run, e.g. per policy), for the terminal."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.table import Table

from blockctl.bench.metrics import Summary
from blockctl.bench.results import RunResult


@dataclass(frozen=True, slots=True)
class Row:
    """One table row: a label, how to read the value from a Summary, how to print it, which way is better."""

    label: str
    value: Callable[[Summary], float | None]
    fmt: Callable[[float], str]
    better: str | None = None  # "low" | "high" | None (no highlight)


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def _s(x: float) -> str:
    return f"{x:.2f}"


def _rate(x: float) -> str:
    return f"{x:.2f}"


def _int(x: float) -> str:
    return f"{x:.0f}"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


ROWS: tuple[Row, ...] = (
    Row("requests", lambda s: s.requests, _int),
    Row("failed", lambda s: s.failed, _int, "low"),
    Row("duration (s)", lambda s: s.duration_s, _s),
    Row("throughput (req/s)", lambda s: s.request_throughput, _rate, "high"),
    Row("output tokens/s", lambda s: s.output_token_throughput, _int, "high"),
    Row("goodput (req/s)", lambda s: s.goodput, _rate, "high"),
    Row("SLO attainment", lambda s: s.slo_attainment, _pct, "high"),
    Row("TTFT mean (ms)", lambda s: s.ttft.mean, _ms, "low"),
    Row("TTFT p50 (ms)", lambda s: s.ttft.p50, _ms, "low"),
    Row("TTFT p90 (ms)", lambda s: s.ttft.p90, _ms, "low"),
    Row("TTFT p99 (ms)", lambda s: s.ttft.p99, _ms, "low"),
    Row("TPOT mean (ms)", lambda s: s.tpot.mean, _ms, "low"),
    Row("TPOT p99 (ms)", lambda s: s.tpot.p99, _ms, "low"),
    Row("ITL p50 (ms)", lambda s: s.itl.p50, _ms, "low"),
    Row("ITL p99 (ms)", lambda s: s.itl.p99, _ms, "low"),
    Row("E2E mean (s)", lambda s: s.e2e.mean, _s, "low"),
    Row("E2E p50 (s)", lambda s: s.e2e.p50, _s, "low"),
    Row("E2E p90 (s)", lambda s: s.e2e.p90, _s, "low"),
    Row("E2E p99 (s)", lambda s: s.e2e.p99, _s, "low"),
    Row("send lateness p99 (ms)", lambda s: s.lateness.p99, _ms),
    Row("prefix cache hit rate", lambda s: s.prefix_cache_hit_rate, _pct, "high"),
)


def _defined(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def table_cells(summaries: Sequence[Summary]) -> list[tuple[str, list[str], int | None]]:
    """Rows as (label, a cell per summary, index of the best cell or None); rows nobody has are left out.

    Pure, so tests (and other renderers) use it without a terminal. Undefined values print as "–".
    """
    out: list[tuple[str, list[str], int | None]] = []
    for row in ROWS:
        values = [row.value(s) for s in summaries]
        if not any(_defined(v) for v in values):
            continue
        cells = [row.fmt(float(v)) if v is not None and _defined(v) else "–" for v in values]
        best: int | None = None
        known = [(float(v), i) for i, v in enumerate(values) if v is not None and _defined(v)]
        if row.better and len(summaries) > 1 and len(known) > 1:
            pick = min if row.better == "low" else max
            best = pick(known)[1]
        out.append((row.label, cells, best))
    return out


# The metrics shown when runs are rows (one line per policy): the ones a comparison is decided on.
COMPACT = (
    "failed",
    "throughput (req/s)",
    "goodput (req/s)",
    "TTFT mean (ms)",
    "TTFT p99 (ms)",
    "TPOT mean (ms)",
    "E2E mean (s)",
    "E2E p99 (s)",
)


def comparison_table(results: Sequence[RunResult], *, title: str | None = None, runs_as_rows: bool = False) -> Table:
    """A rich Table comparing runs; the best value of each metric is in green.

    By default one column per run (its label) and one row per metric; ``runs_as_rows`` gives one row per
    run with the COMPACT metrics as columns (narrower when many policies are compared).
    """
    table = Table(title=title, show_lines=False, header_style="bold")
    rows = table_cells([r.summary for r in results])
    if runs_as_rows:
        picked = [row for row in rows if row[0] in COMPACT]
        table.add_column("run", no_wrap=True)
        for label, _, _ in picked:
            table.add_column(label, justify="right")
        for i, r in enumerate(results):
            cells = [f"[green]{c[i]}[/green]" if best == i else c[i] for _, c, best in picked]
            table.add_row(r.label, *cells)
        return table
    table.add_column("metric", style="dim", no_wrap=True)
    for r in results:
        table.add_column(r.label, justify="right", no_wrap=True)
    for label, cells, best in rows:
        shown = [f"[green]{c}[/green]" if i == best else c for i, c in enumerate(cells)]
        table.add_row(label, *shown)
    return table


def errors_table(result: RunResult, *, limit: int = 5) -> Table | None:
    """The most frequent errors of a run, or None when every request succeeded."""
    if not result.summary.errors:
        return None
    table = Table(title=f"{result.label}: failed requests", header_style="bold")
    table.add_column("count", justify="right")
    table.add_column("error")
    for message, count in list(result.summary.errors.items())[:limit]:
        table.add_row(str(count), message)
    return table
