"""`blockctl bench compare` and `blockctl bench capacity`: policies side by side, in simulation or live."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from blockctl.bench.capacity import parse_slos
from blockctl.bench.compare import (
    Comparison,
    LiveSetup,
    compare_live,
    compare_sim,
    parse_policies,
    parse_qps,
    write_outputs,
)
from blockctl.bench.livelengths import check_length_mode, lengths_note
from blockctl.bench.report import comparison_table
from blockctl.bench.results import jsonable
from blockctl.bench.sim.lengths import held_out_workload, parse_lengths
from blockctl.bench.sim.run import SimSetup
from blockctl.bench.sim.search import SearchSpec, capacities
from blockctl.bench.steady import SHORT_RUN_S, ProbeOutcome
from blockctl.bench.steady_search import PolicyCapacity
from blockctl.bench.workloads import WORKLOADS, parse_arrival
from blockctl.cli.ui import console, err_console, handle_errors, ok, print_json
from blockctl.engine.profile import DEFAULT_PROFILE
from blockctl.errors import ConfigError

SIM_DURATION_S = 300.0  # default seconds of arrivals per simulated run
LIVE_REQUESTS = 1000  # default requests per live run


def _size(requests: int | None, duration: float | None, sim: bool) -> tuple[int, float | None]:
    """(requests, duration) of each run: ``--duration`` or ``--requests``, else the mode's default."""
    if requests is not None and duration is not None:
        raise ConfigError("give --duration (seconds of arrivals) or --requests (a fixed count), not both",
                          key="--duration")
    if duration is not None:
        if not duration > 0:
            raise ConfigError(f"must be a positive number of seconds, got {duration}", key="--duration")
        return LIVE_REQUESTS, duration
    if requests is not None:
        return requests, None
    return (LIVE_REQUESTS, SIM_DURATION_S) if sim else (LIVE_REQUESTS, None)


def _warn_short(requests: int, duration: float | None, rates: list[float]) -> None:
    """A fixed request count at a high rate ends before queues settle: say so (steady state needs minutes)."""
    short = [q for q in rates if duration is None and requests / q < SHORT_RUN_S]
    if short:
        err_console.print(
            f"[yellow]![/yellow] --requests {requests} at {', '.join(f'{q:g}' for q in short)} QPS is under "
            f"{SHORT_RUN_S:.0f} s of arrivals: too short for queues to reach steady state; use --duration")


PROFILE_HELP = ("Sim: step-time profile; a mixed cluster lists NAME:COUNT parts adding up to --instances, e.g. "
                "h100/llama-2-7b:6,h200/llama-2-7b:6.")
LENGTHS_HELP = ("What the router is told of reply lengths. Sim: oracle (default) | noisy:PCT | fixed:N | "
                "tagger:DIR. Live: none (default: it predicts them, tagger or fallback) | oracle (the true "
                "length is sent).")


def _sim_setup(
    *, instances: int, profile: str, max_num_seqs: int | None, max_num_batched_tokens: int | None,
    num_gpu_blocks: int | None, workload: str, requests: int, arrival: str, lengths: str, seed: int, noise: bool,
    duration: float | None = None,
) -> SimSetup:
    spec = parse_arrival(arrival)
    if spec.process is None:
        raise ConfigError(f"'{arrival}': the simulator is open-loop: poisson, gamma:B, constant or trace[:S]",
                          key="--arrival")
    setup = SimSetup(instances, profile, max_num_seqs, max_num_batched_tokens, num_gpu_blocks, workload,
                     requests, spec.process, spec.burstiness, lengths, seed, noise, spec.time_scale, duration)
    setup.validate()
    note = held_out_workload(workload, parse_lengths(lengths))[1]
    if note:
        err_console.print(f"[dim]{note}[/dim]")
    return setup


def _out_dir(out: Path | None, kind: str) -> Path:
    return out if out is not None else Path("results") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def register(group: typer.Typer) -> None:
    @group.command("compare")
    @handle_errors
    def compare(
        policies: str = typer.Option("block,round-robin,llumnix", "--policies", help="Comma-separated policies."),
        sim: bool = typer.Option(False, "--sim", help="Simulate the cluster in virtual time (no HTTP)."),
        endpoint: str | None = typer.Option(None, "--endpoint", help="Live: the scheduler's URL."),
        state_dir: Path | None = typer.Option(
            None, "--state-dir", envvar="BLOCKCTL_STATE_DIR", help="Live: the local cluster's state directory."
        ),
        workload: str = typer.Option("sharegpt", "--workload", help=f"{', '.join(WORKLOADS)} or a file."),
        requests: int | None = typer.Option(
            None, "--requests", min=1, help=f"A fixed number of requests per run (live default {LIVE_REQUESTS})."),
        duration: float | None = typer.Option(
            None, "--duration", help=f"Seconds of arrivals per run (sim default {SIM_DURATION_S:g})."),
        qps: str = typer.Option(..., "--qps", help="Request rate(s), comma-separated: one run per policy each."),
        arrival: str = typer.Option("poisson", "--arrival", help="poisson | gamma:BURSTINESS | constant"),
        seed: int = typer.Option(0, "--seed", help="Seed of the workload sample, arrivals and noise."),
        instances: int = typer.Option(12, "--instances", min=1, help="Sim: number of instances."),
        profile: str = typer.Option(DEFAULT_PROFILE, "--profile", help=PROFILE_HELP),
        max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Sim: engine setting."),
        max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", help="Sim."),
        num_gpu_blocks: int | None = typer.Option(None, "--num-gpu-blocks", help="Sim: KV blocks."),
        lengths: str | None = typer.Option(None, "--lengths", help=LENGTHS_HELP),
        noise: bool = typer.Option(True, "--noise/--no-noise", help="Sim: step-time noise from the profile."),
        jobs: int | None = typer.Option(None, "--jobs", min=1, help="Sim: processes (default: CPU cores)."),
        out: Path | None = typer.Option(None, "--out", help="Directory for results JSON and PNG plots."),
        as_json: bool = typer.Option(False, "--json", help="Print the summaries as JSON."),
    ) -> None:
        """Run the same workload and seed under each policy; print one side-by-side table per QPS."""
        names = parse_policies(policies)
        rates = parse_qps(qps)
        count, seconds = _size(requests, duration, sim)
        _warn_short(count, seconds, rates)
        say = None if as_json else (lambda m: console.print(f"[dim]{m}[/dim]"))
        if sim:
            setup = _sim_setup(instances=instances, profile=profile, max_num_seqs=max_num_seqs,
                               max_num_batched_tokens=max_num_batched_tokens, num_gpu_blocks=num_gpu_blocks,
                               workload=workload, requests=count, arrival=arrival, lengths=lengths or "oracle",
                               seed=seed, noise=noise, duration=seconds)
            result = compare_sim(setup, names, rates, jobs=jobs, progress=say)
        else:
            result = compare_live(_live_setup(endpoint, state_dir, workload, count, arrival, seed, seconds, lengths),
                                  names, rates, progress=say)
        out_dir = _out_dir(out, "compare")
        written = write_outputs(result, out_dir)
        _print_comparison(result, out_dir, written, "sim" if sim else "live", as_json)

    @group.command("capacity")
    @handle_errors
    def capacity(
        policies: str = typer.Option("block,round-robin,llumnix", "--policies", help="Comma-separated policies."),
        sim: bool = typer.Option(True, "--sim/--live", help="In simulation (default) or on the local cluster."),
        slo: str = typer.Option("ttft-p99=3", "--slo", help="Run-level SLOs that must hold, e.g. ttft-p99=3."),
        workload: str = typer.Option("sharegpt", "--workload", help=f"{', '.join(WORKLOADS)} or a file."),
        requests: int | None = typer.Option(
            None, "--requests", min=1, help=f"A fixed number of requests per probe (live default {LIVE_REQUESTS})."),
        duration: float | None = typer.Option(
            None, "--duration", help=f"Seconds of arrivals per probe (sim default {SIM_DURATION_S:g})."),
        saturation_s: float = typer.Option(
            60.0, "--saturation-duration", help="Seconds of arrivals of a saturation probe (overloaded)."),
        arrival: str = typer.Option("poisson", "--arrival", help="poisson | gamma:BURSTINESS | constant"),
        seed: int = typer.Option(0, "--seed", help="Seed of the workload sample, arrivals and noise."),
        instances: int = typer.Option(12, "--instances", min=1, help="Sim: number of instances."),
        profile: str = typer.Option(DEFAULT_PROFILE, "--profile", help=PROFILE_HELP),
        max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Sim: engine setting."),
        max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", help="Sim."),
        num_gpu_blocks: int | None = typer.Option(None, "--num-gpu-blocks", help="Sim: KV blocks."),
        lengths: str | None = typer.Option(None, "--lengths", help=LENGTHS_HELP),
        noise: bool = typer.Option(True, "--noise/--no-noise", help="Sim: step-time noise from the profile."),
        resolution: float = typer.Option(0.1, "--resolution", help="Stop when the bracket is this narrow (QPS)…"),
        rel_resolution: float = typer.Option(0.01, "--rel-resolution", help="…or this fraction of the answer."),
        start: float | None = typer.Option(
            None, "--start", help="First QPS offered to find saturation (default: 8 per instance; predictive "
            "policies are offered 1.15 × the best non-predictive saturation)."),
        max_qps: float = typer.Option(10_000.0, "--max-qps", help="No probe goes past this QPS."),
        jobs: int | None = typer.Option(None, "--jobs", min=1, help="Sim: processes (default: CPU cores)."),
        endpoint: str | None = typer.Option(None, "--endpoint", help="Live: the scheduler's URL."),
        state_dir: Path | None = typer.Option(None, "--state-dir", envvar="BLOCKCTL_STATE_DIR", help="Live."),
        out: Path | None = typer.Option(None, "--out", help="Also write every probe (JSON) here."),
        as_json: bool = typer.Option(
            False, "--json", help="Print per policy {capacity, capped, saturation, probes} as JSON."),
    ) -> None:
        """Per policy: its saturation throughput, then the highest QPS at which the run is stable and the SLO
        holds at steady state (warm-up left out), by bracketing then bisection below saturation, and above it
        where the SLO held there (overloaded engines that thrash complete less than they sustain)."""
        names = parse_policies(policies)
        slos = tuple(parse_slos(slo))
        if not (resolution > 0 and rel_resolution >= 0):
            raise ConfigError("must be > 0 (and --rel-resolution >= 0)", key="--resolution")
        if not saturation_s > 0:
            raise ConfigError(f"must be a positive number of seconds, got {saturation_s}",
                              key="--saturation-duration")
        count, seconds = _size(requests, duration, sim)
        say = _probe_line  # on stderr: --json keeps stdout for the JSON document
        t0 = time.perf_counter()
        if sim:
            setup = _sim_setup(instances=instances, profile=profile, max_num_seqs=max_num_seqs,
                               max_num_batched_tokens=max_num_batched_tokens, num_gpu_blocks=num_gpu_blocks,
                               workload=workload, requests=count, arrival=arrival, lengths=lengths or "oracle",
                               seed=seed, noise=noise, duration=seconds)
            spec = SearchSpec(slos, resolution, rel_resolution, start, max_qps, saturation_s)
            found = capacities(setup, names, spec, jobs=jobs, progress=say)
        else:
            from blockctl.bench.capacity import live_capacities

            live = _live_setup(endpoint, state_dir, workload, count, arrival, seed, seconds, lengths)
            found = live_capacities(live, names, slos, resolution=resolution, rel_resolution=rel_resolution,
                                    start=start or 1.0, max_qps=max_qps, saturation_s=saturation_s, progress=say)
        elapsed = time.perf_counter() - t0
        _warn_short(count, seconds, sorted({p.qps for r in found.values() for p in r.probes}))
        if out is not None:
            _save_probes(out, found, slo, elapsed)
        if as_json:
            print_json({p: r.to_dict() for p, r in found.items()})
            return
        _print_capacities(found, slo, elapsed)


def _probe_line(policy: str, out: ProbeOutcome, saturation: bool) -> None:
    """One dim line per probe (module-level: worker processes call it too)."""
    if saturation:
        what = f"completes {out.completed_rps or 0.0:.2f} req/s (saturation probe)"
    elif out.stopped_early:
        what = "breaks (SLO certainly broken, stopped early)"
    else:
        slo = out.slo_value
        what = (f"{'holds' if out.held else 'breaks'}: {'stable' if out.stable else 'unstable'}, "
                f"completes {out.completed_rps or 0.0:.2f} req/s, SLO value {slo if slo is None else f'{slo:.3g}'}")
    err_console.print(f"[dim]{policy}: {out.qps:.2f} QPS {what}[/dim]")


def _live_setup(endpoint: str | None, state_dir: Path | None, workload: str, requests: int, arrival: str,
                seed: int, duration: float | None = None, lengths: str | None = None) -> LiveSetup:
    from blockctl.cluster.state import default_state_dir, load_state

    mode = check_length_mode(lengths or "none")
    sdir = state_dir or default_state_dir()
    if endpoint is None:
        state = load_state(sdir)
        if state is None or not state.schedulers:
            raise ConfigError(f"no cluster recorded in {sdir}", key="--state-dir",
                              hint="blockctl up --local, or pass --sim for a simulated cluster")
        endpoint = state.schedulers[0].url
    return LiveSetup(endpoint, sdir, workload, requests, arrival, seed, duration=duration, lengths=mode)


def _print_comparison(cmp: Comparison, out_dir: Path, written: list[Path], kind: str, as_json: bool) -> None:
    if as_json:
        print_json(jsonable({
            "kind": kind,
            "out": str(out_dir),
            "runs": {f"{q:g}": {r.label: {**r.summary.to_dict(), "steady": r.config.get("steady")} for r in rs}
                     for q, rs in sorted(cmp.runs.items())},
        }))
        return
    for q, results in sorted(cmp.runs.items()):
        console.print(comparison_table(results, title=f"{kind}: {q:g} QPS"))
        if kind == "live":  # what the router knew: a live comparison is oracle only when it says so
            for r in results:
                console.print(f"{r.label}: {lengths_note(r.records)}")
        steady = [(r.label, r.config["steady"]) for r in results if isinstance(r.config.get("steady"), dict)]
        if steady:
            console.print(_steady_table(steady, q))
    plots = [p for p in written if p.suffix == ".png"]
    ok(f"results and {len(plots)} plot(s) in {out_dir}")


def _steady_table(rows: list[tuple[str, dict[str, Any]]], qps: float) -> Table:
    """Each run judged at steady state: post-warm-up percentiles, and whether completions kept up."""
    table = Table(title=f"{qps:g} QPS at steady state (first 10 % of arrivals left out)")
    for col in ("policy", "completed / offered req/s", "stable", "TTFT P50", "TTFT P99", "E2E P50", "E2E P99"):
        table.add_column(col, justify="left" if col == "policy" else "right")

    def sec(v: object) -> str:
        return f"{v:.3f} s" if isinstance(v, float) else str(v)

    for label, s in rows:
        table.add_row(label, f"{s['completed_rps']:.1f} / {s['offered_rps']:.1f}", "yes" if s["stable"] else "NO",
                      sec(s["ttft_p50_s"]), sec(s["ttft_p99_s"]), sec(s["e2e_p50_s"]), sec(s["e2e_p99_s"]))
    return table


def _print_capacities(found: dict[str, PolicyCapacity], slo: str, elapsed: float) -> None:
    table = Table(title=f"steady-state capacity at {slo}")
    table.add_column("policy")
    table.add_column("capacity (QPS)", justify="right")
    first = next(iter(found.values())).capacity if found else 0.0
    table.add_column(f"× {next(iter(found))}" if found else "×", justify="right")
    table.add_column("saturation (req/s)", justify="right")
    table.add_column("probes", justify="right")
    for name, r in found.items():
        ratio = f"{r.capacity / first:.3f}" if first > 0 and not r.capped else "-"
        cap = f"≥ {r.capacity:.2f} (ceiling)" if r.capped else f"{r.capacity:.2f}" + (
            " (held at saturation)" if r.at_saturation else "")
        sat = "-" if r.saturation is None else f"{r.saturation.completed_rps:.2f}"
        n_sat = 0 if r.saturation is None else len(r.saturation.probes)
        table.add_row(name, cap, ratio, sat, f"{len(r.probes)} + {n_sat}")
    console.print(table)
    ok(f"searched {len(found)} polic{'y' if len(found) == 1 else 'ies'} in {elapsed:.0f} s")


def _save_probes(out: Path, found: dict[str, PolicyCapacity], slo: str, elapsed: float) -> None:
    import json

    doc: dict[str, Any] = {"slo": slo, "elapsed_s": round(elapsed, 1),
                           "policies": {p: r.to_dict() for p, r in found.items()}}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", source=str(out)) from exc
