"""`blockctl bench autoscale`: predictive vs reactive scaling vs a fixed maximal cluster, on a phased trace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from blockctl.bench.autoscale_live import run_live_autoscale
from blockctl.bench.sim.autoscale import AutoscaleRun, run_autoscaled
from blockctl.bench.sim.autoscale_plot import plot_autoscale
from blockctl.bench.sim.autoscale_trace import TRACES, Figures, figures, parse_phases, phased_arrivals
from blockctl.bench.sim.run import SimSetup, prepare
from blockctl.cli.ui import console, handle_errors, ok, print_json
from blockctl.cluster.scaler import SCALE_POLICIES, AutoscaleConfig
from blockctl.cluster.state import load_state, resolve_state_dir
from blockctl.engine.profile import DEFAULT_PROFILE
from blockctl.errors import ConfigError, StateError

FIXED = "fixed"


def _policies(spec: str) -> list[str]:
    names = [p.strip() for p in spec.split(",") if p.strip()]
    for name in names:
        if name != FIXED and name not in SCALE_POLICIES:
            raise ConfigError(f"unknown '{name}'; one of {', '.join([*SCALE_POLICIES, FIXED])}", key="--policies")
    if not names:
        raise ConfigError("no policy given", key="--policies")
    return names


def _endpoint(state_dir: Path) -> str:
    state = load_state(state_dir)
    if state is None or state.kind != "local" or not state.schedulers:
        raise StateError(f"no local cluster with a scheduler is recorded in {state_dir}",
                         hint="blockctl up --local --instances 1")
    return state.schedulers[0].url


def _table(rows: list[Figures], slo: float) -> None:
    table = Table(title=f"autoscaling (SLO: P99 TTFT ≤ {slo:g} s)")
    cols = ("run", "P99 TTFT s", "P99 E2E s", "SLO viol. s", "inst·s", "mean inst", "max", "ups", "downs",
            "time to scale s")
    for c in cols:
        table.add_column(c, justify="left" if c == "run" else "right")
    for f in rows:
        table.add_row(f.label, f"{f.ttft_p99_s:.2f}", f"{f.e2e_p99_s:.2f}", f"{f.violation_s:.0f}",
                      f"{f.instance_s:.0f}", f"{f.mean_instances:.2f}", str(f.max_instances), str(f.scale_ups),
                      str(f.scale_downs), "-" if f.time_to_scale_s is None else f"{f.time_to_scale_s:.1f}")
    console.print(table)


def register(group: typer.Typer) -> None:
    @group.command("autoscale")
    @handle_errors
    def autoscale(
        sim: bool = typer.Option(True, "--sim/--live", help="In simulation, or on the running local cluster."),
        state_dir: Path | None = typer.Option(None, "--state-dir", help="Live: the local cluster's state dir."),
        startup_delay: float = typer.Option(5.0, "--startup-delay", help="Live: emulated start-up of new instances."),
        trace: str = typer.Option("step", "--trace", help=f"{', '.join(TRACES)} or FACTOR:SECONDS,... phases."),
        base_qps: float = typer.Option(..., "--base-qps", help="QPS of factor 1 (e.g. capacity of --initial)."),
        policies: str = typer.Option("predictive,reactive,fixed", "--policies", help="Comma-separated runs."),
        initial: int = typer.Option(2, "--initial", min=1, help="Instances at the start (scaled runs)."),
        min_instances: int = typer.Option(1, "--min", min=1, help="Fewest instances."),
        max_instances: int = typer.Option(6, "--max", min=1, help="Most instances (= the fixed run's size)."),
        slo_ttft: float = typer.Option(2.0, "--slo-ttft", help="SLO: P99 TTFT at most this (s)."),
        startup: float = typer.Option(30.0, "--startup", help="Seconds from launch until an instance serves."),
        interval: float = typer.Option(5.0, "--interval", help="Seconds between decisions."),
        up_cooldown: float = typer.Option(10.0, "--up-cooldown", help="Seconds between scale-ups."),
        down_cooldown: float = typer.Option(60.0, "--down-cooldown", help="Seconds after any action."),
        window: float = typer.Option(30.0, "--window", help="Observation window (s)."),
        target_frac: float = typer.Option(0.5, "--target-frac", help="Aim at this fraction of the SLO."),
        rate_margin: float = typer.Option(0.2, "--rate-margin", help="Predictive: projected rate × (1 + this)."),
        down_margin: float = typer.Option(0.25, "--down-margin", help="Predictive: extra margin to scale down."),
        routing: str = typer.Option("block", "--routing", help="Routing policy inside the cluster."),
        workload: str = typer.Option("sharegpt", "--workload", help="Workload name or file."),
        lengths: str = typer.Option("oracle", "--lengths", help="oracle | noisy:PCT."),
        profile: str = typer.Option(DEFAULT_PROFILE, "--profile", help="Step-time profile."),
        max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Engine setting."),
        seed: int = typer.Option(0, "--seed", help="Seed of the trace, workload sample and noise."),
        out: Path = typer.Option(Path("results/autoscale"), "--out", help="Folder for JSON and PNG."),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    ) -> None:
        """Run each policy over the same trace; print P99 TTFT/E2E, SLO-violation time, instance-seconds."""
        names = _policies(policies)
        phases = parse_phases(trace)
        if base_qps <= 0:
            raise ConfigError(f"must be positive, got {base_qps}", key="--base-qps")
        arrivals = phased_arrivals(phases, base_qps, seed=seed)
        if not arrivals:
            raise ConfigError("the trace has no arrivals", key="--trace")
        setup = SimSetup(instances=1, profile=profile, max_num_seqs=max_num_seqs, workload=workload,
                         requests=len(arrivals), lengths=lengths, seed=seed)
        prepared = prepare(setup)
        live_dir = None if sim else resolve_state_dir(state_dir)
        endpoint = "" if live_dir is None else _endpoint(live_dir)
        runs: list[AutoscaleRun] = []
        rows: list[Figures] = []
        walls: dict[str, float] = {}
        for name in names:
            cfg = None
            if name != FIXED:
                cfg = AutoscaleConfig(min_instances=min_instances, max_instances=max_instances, slo_ttft_s=slo_ttft,
                                      policy=name, interval_s=interval, up_cooldown_s=up_cooldown,
                                      down_cooldown_s=down_cooldown, startup_s=startup, window_s=window,
                                      target_frac=target_frac, rate_margin=rate_margin, down_margin=down_margin)
                cfg.validate()
            t0 = time.perf_counter()
            label = name if cfg else f"fixed-{max_instances}"
            size = initial if cfg else max_instances
            if live_dir is not None:
                with console.status(f"running {name} on the local cluster ({len(arrivals)} requests)"):
                    run = run_live_autoscale(live_dir, endpoint, prepared.items, arrivals, label=label, scale=cfg,
                                             initial=size, startup_delay_s=startup_delay)
            else:
                with console.status(f"simulating {name} ({len(arrivals)} requests)"):
                    run = run_autoscaled(prepared, arrivals, label=label, routing=routing, scale=cfg,
                                         initial=size, seed=seed)
            walls[name] = time.perf_counter() - t0
            runs.append(run)
            rows.append(figures(run, phases, slo_ttft))
        out.mkdir(parents=True, exist_ok=True)
        png = plot_autoscale(runs, arrivals, slo_ttft, out / "autoscale.png")
        doc = {
            "command": "bench autoscale " + ("--sim" if sim else "--live"),
            "trace": trace, "base_qps": base_qps, "requests": len(arrivals), "slo_ttft_s": slo_ttft,
            "startup_s": startup, "interval_s": interval, "routing": routing, "workload": workload,
            "target_frac": target_frac, "rate_margin": rate_margin, "down_margin": down_margin,
            "lengths": lengths, "max_num_seqs": max_num_seqs, "seed": seed,
            "runs": [{**f.to_json(), "wall_s": round(walls[n], 2),
                      "decisions": [{"t": tk.t, **tk.decision.to_json()} for tk in r.ticks
                                    if tk.decision is not None and tk.decision.action != "hold"]}
                     for n, f, r in zip(names, rows, runs, strict=True)],
        }
        (out / "autoscale.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if as_json:
            print_json(doc)
            return
        _table(rows, slo_ttft)
        _compare(rows)
        ok(f"wrote {out / 'autoscale.json'} and {png}")


def _compare(rows: list[Figures]) -> None:
    by = {f.label: f for f in rows}
    p, r = by.get("predictive"), by.get("reactive")
    if p is None or r is None or r.ttft_p99_s <= 0:
        return
    cut = 100.0 * (1.0 - p.ttft_p99_s / r.ttft_p99_s)
    cost = 100.0 * (p.instance_s / r.instance_s - 1.0) if r.instance_s else 0.0
    console.print(f"predictive vs reactive: P99 TTFT {cut:+.1f} % lower, instance-seconds {cost:+.1f} %")
