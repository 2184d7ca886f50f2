"""`blockctl profile run`: measure a model's step latencies with torch on a GPU and fit the step-time model."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from blockctl.cli.ui import console, handle_errors, ok, print_json
from blockctl.engine.profile import load_profile, profile_from_document, user_profiles_dir, write_profile
from blockctl.errors import ConfigError
from blockctl_agents.profiler.compare import RegionAgreement, agreement

if TYPE_CHECKING:
    from blockctl_agents.profiler.run import Options


def _out_path(out: str) -> Path:
    if out.endswith(".json"):
        return Path(out).expanduser()
    if not out or ".." in out or out.startswith("/"):
        raise ConfigError(f"{out!r} is neither a profile name like h100/my-model nor a .json path", key="--out")
    return user_profiles_dir() / f"{out}.json"


def register(group: typer.Typer) -> None:
    @group.command("run")
    @handle_errors
    def run_cmd(
        model: str = typer.Option(..., "--model", help="Built-in shape name, directory with config.json, or HF id."),
        out: str = typer.Option(..., "--out", help="Profile name (saved in the user profile dir) or a .json path."),
        device: str = typer.Option("auto", help="auto (a CUDA GPU), cuda, or cpu (code path only)."),
        grid: str = typer.Option("default", help="default (the seed grid, ~180 steps) or quick (a few steps)."),
        tp: int = typer.Option(1, "--tp", help="Tensor-parallel size: one GPU's shard is timed, all-reduce added."),
        max_num_batched_tokens: int = typer.Option(0, help="Cap the grid at this token budget (0: no cap)."),
        max_num_seqs: int = typer.Option(0, help="Cap decode batches at this many sequences (0: no cap)."),
        max_model_len: int = typer.Option(0, help="Cap contexts at this length (0: no cap)."),
        repeats: int = typer.Option(15, min=1, help="Timed replays per step (median reported)."),
        warmup: int = typer.Option(3, min=0, help="Untimed replays before timing."),
        share_layer_weights: bool = typer.Option(False, help="One layer's weights for all layers (less memory)."),
        allreduce_latency_us: float = typer.Option(8.0, help="Ring hop latency used when tp GPUs are absent."),
        allreduce_bus_gbps: float = typer.Option(300.0, help="All-reduce bus bandwidth used when tp GPUs are absent."),
        compare: str = typer.Option("", help="A profile to compare with, per grid region (e.g. h100/llama-2-7b)."),
        host: str = typer.Option("", help="Run on this host of the cluster spec (-c) over SSH instead of here."),
        config: Path | None = typer.Option(None, "--config", "-c", help="Cluster spec YAML naming --host."),
        as_json: bool = typer.Option(False, "--json", help="Print the fit and comparison as JSON."),
    ) -> None:
        """Measure engine-step latencies for a model's shape (random weights; only config.json is read)."""
        from blockctl_agents.profiler.run import Options, run

        path = _out_path(out)
        opts = Options(
            model=model,
            name=path.stem if out.endswith(".json") else out,
            device=device,
            grid=grid,
            tp=tp,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            max_model_len=max_model_len,
            repeats=repeats,
            warmup=warmup,
            share_layer_weights=share_layer_weights,
            allreduce_latency_us=allreduce_latency_us,
            allreduce_bus_gbps=allreduce_bus_gbps,
        )
        reference = load_profile(compare) if compare else None
        if host:
            doc = _run_remote(opts, host, config, as_json)
        else:
            cfg = opts.to_config()
            with Progress(
                TextColumn("profiling {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=as_json,
                transient=True,
            ) as bar:
                task = bar.add_task(cfg.shape.name, total=None)
                doc = run(cfg, lambda done, total: bar.update(task, completed=done, total=total))
        write_profile(doc, path)
        profile = profile_from_document(doc, source=str(path))
        rows = list(profile.rows)
        regions = agreement(rows, reference.rows) if reference else []
        fit = doc["fit"]
        if as_json:
            print_json(
                {
                    "profile": str(path),
                    "rows": len(rows),
                    "seconds": doc["measurement"]["seconds"],
                    "fit": fit,
                    "compare": {"reference": reference.name, "regions": [asdict(r) for r in regions]}
                    if reference
                    else None,
                }
            )
            return
        ok(
            f"measured {len(rows)} steps of {profile.shape.name} on {profile.gpu.name} in "
            f"{doc['measurement']['seconds']} s → {path}"
        )
        cv = fit.get("cv", {})
        if "kfold_mape_pct" in cv:
            ok(f"step-time model: {cv['kfold_mape_pct']:.1f} % MAPE ({cv.get('kfold_k', 5)}-fold cross-validated)")
        if reference:
            _print_agreement(reference.name, regions)


def _run_remote(opts: Options, host: str, config: Path | None, quiet: bool) -> dict[str, Any]:
    from blockctl.cluster.spec import load_spec
    from blockctl.cluster.ssh.profiling import profile_on_host
    from blockctl.cluster.state import logs_dir, resolve_state_dir

    if config is None:
        raise ConfigError(
            "--host needs the cluster spec that names it",
            key="--config",
            hint="blockctl profile run -c cluster.yaml --host HOST ...",
        )
    spec = load_spec(config)
    logs = logs_dir(resolve_state_dir(None))
    with (
        console.status(f"profiling on {host} over SSH (log: {logs / 'ssh'})", spinner="dots")
        if not quiet
        else nullcontext()
    ):
        return asyncio.run(profile_on_host(spec, host, opts.argv(), logs_dir=logs))


def _print_agreement(ref_name: str, regions: list[RegionAgreement]) -> None:
    table = Table(title=f"agreement with {ref_name} (median step time)")
    for col in ("region", "steps", "median |Δ| %", "max |Δ| %", "mean Δ %"):
        table.add_column(col, justify="right" if col != "region" else "left")
    for r in regions:
        d = asdict(r)
        table.add_row(
            str(d["region"]),
            str(d["steps"]),
            f"{d['median_abs_pct']:.1f}",
            f"{d['max_abs_pct']:.1f}",
            f"{d['mean_signed_pct']:+.1f}",
        )
    console.print(table)
