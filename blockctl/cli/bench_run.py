"""`blockctl bench run`: benchmark any OpenAI-compatible endpoint with a workload and an arrival process."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from blockctl.bench.livelengths import check_length_mode
from blockctl.bench.loadgen import APIS, INTERRUPTED, NOT_SENT, LoadSpec, run_live, send_schedule
from blockctl.bench.metrics import RequestRecord, RequestSlo, parse_request_slo
from blockctl.bench.report import comparison_table, errors_table
from blockctl.bench.results import RunResult, jsonable, save_results
from blockctl.bench.workloads import WORKLOADS, WorkItem, parse_arrival, read_workload
from blockctl.cli.ui import console, fail, handle_errors, ok, print_json
from blockctl.errors import ConfigError
from blockctl.secrets import read_secret_file

LATE_WARNING_S = 0.1  # warn when the generator sends requests this much later than scheduled (p99)


def register(group: typer.Typer) -> None:
    @group.command("run")
    @handle_errors
    def run(
        endpoint: str = typer.Option(..., "--endpoint", help="Base URL, e.g. http://127.0.0.1:8000"),
        workload: str = typer.Option(
            "sharegpt", "--workload", help=f"One of {', '.join(WORKLOADS)}, or a .json/.csv/.jsonl file."
        ),
        requests: int = typer.Option(200, "--requests", min=1, help="Number of requests to send."),
        qps: float = typer.Option(math.inf, "--qps", help="Mean request rate (inf: all at once)."),
        arrival: str = typer.Option(
            "poisson",
            "--arrival",
            help="poisson | gamma:BURSTINESS | constant | trace[:TIME_SCALE] | concurrency:N",
        ),
        model: str = typer.Option("", "--model", help="Model name (default: the endpoint's first model)."),
        api: str = typer.Option("completions", "--api", help="completions | chat"),
        slo: str = typer.Option("", "--slo", help="Per-request SLO for goodput: ttft=0.5,tpot=0.05,e2e=20"),
        seed: int = typer.Option(0, "--seed", help="Seed of the workload sample and the arrival times."),
        out: Path | None = typer.Option(None, "--out", help="Write the full results (JSON) here."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON; no progress bar."),
        api_key: str | None = typer.Option(
            None, "--api-key", envvar="BLOCKCTL_API_KEY",
            help="Bearer token for the endpoint (prefer the variable or --api-key-file: a flag shows in `ps`).",
        ),
        api_key_file: Path | None = typer.Option(
            None, "--api-key-file", help="File (mode 0600) holding the endpoint's bearer token."
        ),
        lengths: str = typer.Option(
            "none", "--lengths", help="none: no length information (as production); oracle: the true length "
            "(max_tokens + ignore_eos, and the x-blockctl-output-tokens header)."
        ),
        label: str = typer.Option("", "--label", help="Name of this run in reports (default: the endpoint)."),
        timeout: float = typer.Option(600.0, "--timeout", min=1.0, help="Seconds one request may take."),
    ) -> None:
        """Send a workload to an endpoint (streaming) and report TTFT, TPOT, ITL, E2E, throughput, goodput."""
        if api not in APIS:
            raise ConfigError(f"'{api}': expected one of {', '.join(APIS)}", key="--api")
        if not qps > 0:
            raise ConfigError(f"must be > 0 (got {qps})", key="--qps")
        check_length_mode(lengths)
        if api_key_file is not None:
            api_key = read_secret_file(api_key_file, what="API key", key="--api-key-file").strip()
        arrival_spec = parse_arrival(arrival)
        request_slo = parse_request_slo(slo) if slo else None
        loaded = read_workload(workload, num_requests=requests, seed=seed)
        times = send_schedule(loaded.items, arrival_spec, qps, seed)
        spec = LoadSpec(
            endpoint=endpoint,
            model=model,
            api=api,
            api_key=api_key,
            lengths=lengths,
            concurrency=arrival_spec.concurrency,
            request_timeout_s=timeout,
            seed=seed,
        )
        config = {
            "workload": workload,
            "requests": requests,
            "qps": None if math.isinf(qps) else qps,
            "arrival": arrival,
            "seed": seed,
            "lengths": lengths,
            "workload_notes": loaded.notes,
        }
        if not as_json:
            for note in loaded.notes:
                console.print(f"[dim]workload: {note}[/dim]")
        result = _run(loaded.items, times, spec, label or endpoint, config, request_slo, show_progress=not as_json)
        interrupted = any(r.error in (INTERRUPTED, NOT_SENT) for r in result.records)
        if interrupted:
            result.config["interrupted"] = True
        if out is not None:
            save_results(out, result)
        _print(result, out, as_json)
        if interrupted:
            raise typer.Exit(130)
        if result.summary.completed == 0:
            raise typer.Exit(1)


def _run(
    items: Sequence[WorkItem],
    times: Sequence[float],
    spec: LoadSpec,
    label: str,
    config: dict[str, Any],
    slo: RequestSlo | None,
    *,
    show_progress: bool,
) -> RunResult:
    if not show_progress:
        return asyncio.run(run_live(items, times, spec, label=label, config=config, slo=slo))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    failed = 0
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("requests", total=len(items))

        def done(rec: RequestRecord) -> None:
            nonlocal failed
            failed += rec.error is not None
            suffix = f" ([red]{failed} failed[/red])" if failed else ""
            progress.update(task, advance=1, description=f"requests{suffix}")

        return asyncio.run(run_live(items, times, spec, label=label, config=config, slo=slo, on_done=done))


def _print(result: RunResult, out: Path | None, as_json: bool) -> None:
    s = result.summary
    if as_json:
        payload = result.to_dict()
        payload.pop("records")
        if out is not None:
            payload["results_file"] = str(out)
        print_json(jsonable(payload))
        return
    console.print(comparison_table([result], title=f"{result.label} — {result.config.get('workload')}"))
    errors = errors_table(result)
    if errors is not None:
        console.print(errors)
    saved = f"; results in {out}" if out is not None else ""
    late = s.lateness.p99
    if late > LATE_WARNING_S:  # NaN compares False
        fail(
            f"the load generator fell behind its schedule (p99 send lateness {late * 1e3:.0f} ms): "
            "latencies include client-side delay",
            hint="lower --qps, or run the generator on a less loaded machine",
        )
    if result.config.get("interrupted"):
        fail(f"interrupted after {s.completed}/{s.requests} requests; the rest count as failed{saved}")
        return
    if s.failed:
        fail(f"{s.failed} of {s.requests} requests failed (listed above; kept in the results)")
    ok(f"{s.completed}/{s.requests} requests in {s.duration_s:.1f} s ({s.request_throughput:.2f} req/s){saved}")
