"""PNG plots of benchmark results with matplotlib (Agg, no pyplot state): latency CDFs, P99 latency vs QPS."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockctl.bench.metrics import Summary, cdf_points, metric_values
from blockctl.bench.results import RunResult
from blockctl.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_TITLES = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "E2E latency", "itl": "inter-token latency"}


def _figure(ncols: int) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0 * ncols, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _plain_log(axis: Any) -> None:
    """Log-axis ticks at 1, 2 and 5 per decade, labelled as plain numbers (0.05, 1, 20)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig: Figure, path: Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (creating its folder); ConfigError when that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise ConfigError(f"cannot write plot: {exc.strerror}", source=str(path)) from exc
    return path


def plot_cdfs(results: Sequence[RunResult], path: str | Path, metrics: Sequence[str] = ("ttft", "e2e")) -> Path:
    """One panel per metric, one CDF line per result (successful requests only; seconds, log x-axis)."""
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        for r in results:
            xs, ys = cdf_points(metric_values(r.records, metric))
            if xs:
                ax.plot(xs, ys, label=r.label, linewidth=1.5)
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
        ax.set_xlabel(f"{_TITLES.get(metric, metric)} (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0.0, 1.0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, Path(path))


def _stat(summary: Summary, name: str) -> float:
    """``ttft.p99`` → summary.ttft.p99 (NaN when undefined)."""
    metric, _, stat = name.partition(".")
    value = getattr(getattr(summary, metric), stat)
    return math.nan if value is None else float(value)


def plot_vs_qps(
    series: Mapping[str, Sequence[tuple[float, Summary]]],
    path: str | Path,
    stats: Sequence[str] = ("ttft.p99", "e2e.p99"),
    *,
    slo: Mapping[str, float] | None = None,
) -> Path:
    """One panel per statistic (e.g. ``ttft.p99``), one line per label over its (qps, summary) points.

    ``slo`` maps a statistic to a limit drawn as a dashed line (e.g. {"ttft.p99": 3.0}).
    """
    fig, axes = _figure(len(stats))
    for ax, stat in zip(axes, stats, strict=True):
        for label, points in series.items():
            pts = sorted(points, key=lambda p: p[0])
            xs, ys = [q for q, _ in pts], [_stat(s, stat) for _, s in pts]
            ax.plot(xs, ys, marker="o", label=label)
        if slo and stat in slo:
            ax.axhline(slo[stat], color="grey", linestyle="--", linewidth=1, label="SLO")
        metric, _, which = stat.partition(".")
        ax.set_xlabel("request rate (QPS)")
        ax.set_ylabel(f"{which.upper()} {_TITLES.get(metric, metric)} (s)")
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, Path(path))
