"""PNG of autoscaling runs over time: offered load, cluster size, and P99 TTFT per time bin against the SLO."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from blockctl.bench.plots import save_figure
from blockctl.bench.sim.autoscale import AutoscaleRun


def ttft_p99_series(run: AutoscaleRun, bin_s: float) -> tuple[list[float], list[float]]:
    """(bin centre, P99 TTFT of the requests that arrived in it); unfinished requests count as inf."""
    bins: dict[int, list[float]] = {}
    for r in run.records:
        bins.setdefault(int(r.arrival // bin_s), []).append(np.inf if r.ttft is None else r.ttft)
    keys = sorted(bins)
    return [(k + 0.5) * bin_s for k in keys], [float(np.percentile(np.asarray(bins[k]), 99.0)) for k in keys]


def plot_autoscale(
    runs: Sequence[AutoscaleRun], arrivals: Sequence[float], slo_ttft_s: float, path: str | Path,
    *, bin_s: float = 10.0,
) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    load_ax, size_ax, lat_ax = (fig.add_subplot(3, 1, i + 1) for i in range(3))
    edges = np.arange(0.0, (max(arrivals, default=0.0) // bin_s + 2) * bin_s, bin_s)
    counts, _ = np.histogram(np.asarray(arrivals), bins=edges)
    load_ax.step(edges[:-1], counts / bin_s, where="post", color="grey")
    load_ax.set_ylabel("offered QPS")
    for run in runs:
        ts = [0.0, *(tk.t for tk in run.ticks)]
        size = [run.ticks[0].serving if run.ticks else 0, *(tk.serving for tk in run.ticks)]
        line = size_ax.step(ts, size, where="post", label=run.label, linewidth=1.5)
        paid = [0.0, *(tk.t for tk in run.ticks)], [size[0], *(tk.serving + tk.starting for tk in run.ticks)]
        size_ax.step(*paid, where="post", linestyle=":", color=line[0].get_color(), linewidth=1.0)
        xs, ys = ttft_p99_series(run, bin_s)
        lat_ax.plot(xs, np.minimum(ys, 1e4), marker=".", label=run.label, linewidth=1.2)
    size_ax.set_ylabel("instances (dotted: + starting)")
    size_ax.legend(loc="upper left", fontsize="small")
    lat_ax.axhline(slo_ttft_s, color="red", linestyle="--", linewidth=1.0, label=f"SLO {slo_ttft_s:g} s")
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel(f"P99 TTFT per {bin_s:g} s (s)")
    lat_ax.set_xlabel("time (s)")
    lat_ax.legend(loc="upper left", fontsize="small")
    return save_figure(fig, Path(path), dpi=110)
