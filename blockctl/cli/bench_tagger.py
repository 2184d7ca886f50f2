"""``blockctl bench tagger``: online tagging latency (p50/p99) at a given request rate."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path

import typer

from blockctl.cli.ui import console, handle_errors, metric_table, ok, print_json
from blockctl.tagger.online import DAEMON_THREADS

P50_TARGET_MS = 10.0


def _prompts(source: str, n: int) -> list[str]:
    """Held-out (test-split) prompts of the source, so the tagger is timed on text it was not trained on."""
    from blockctl.tagger import dataset as ds

    if source == "sharegpt":  # no need to count reply tokens just to get prompts
        from blockctl.bench.sharegpt import iter_conversations

        pairs = (p for p, _ in iter_conversations() if p.strip() and ds.split_of(p) == "test")
        return list(itertools.islice(pairs, n))
    return [e.prompt for e in ds.split_examples(ds.load_examples(source))["test"][:n]]


@handle_errors
def tagger(
    model: Path = typer.Option(..., "--model", help="Tagger dir (from blockctl train-tagger)."),
    rate: float = typer.Option(20.0, "--rate", min=0.01, help="Requests per second (Poisson arrivals)."),
    requests: int = typer.Option(400, "--requests", min=1),
    data: str = typer.Option("sharegpt", "--data", help="Where prompts come from (its test split)."),
    max_batch: int = typer.Option(16, "--max-batch", min=1),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", min=0.0, help="An idle worker waits this for company."),
    deadline_ms: float = typer.Option(1000.0, "--deadline-ms", min=0.1, help="Answers later than this miss."),
    threads: int = typer.Option(DAEMON_THREADS, "--threads", min=1,
                                help="torch CPU threads (default: what the scheduler daemon uses)."),
    seed: int = typer.Option(0, "--seed"),
    module: bool = typer.Option(False, "--module", help="Time the Hugging Face module, not the lean forward."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Tag ShareGPT prompts through the scheduler's micro-batching tagger and report latency percentiles."""
    from blockctl.tagger.bench import run

    prompts = _prompts(data, min(requests, 2000))
    if not prompts:
        from blockctl.errors import TaggerError

        raise TaggerError(f"{data}: no test-split prompts to time")
    summary = asyncio.run(
        run(
            model,
            prompts,
            rate=rate,
            requests=requests,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            deadline_ms=deadline_ms,
            threads=threads,
            seed=seed,
            lean=not module,
        )
    )
    result = {"model": str(model), **dataclasses.asdict(summary), "target_p50_ms": P50_TARGET_MS}
    if json_out:
        print_json(result)
        return
    fields = (
        ("p50_ms", "p50 latency", "{:.1f} ms"),
        ("p90_ms", "p90 latency", "{:.1f} ms"),
        ("p99_ms", "p99 latency", "{:.1f} ms"),
        ("max_ms", "max latency", "{:.1f} ms"),
        ("mean_batch", "mean batch", "{:.2f}"),
        ("process_cpu_ms_per_request", "process CPU / request", "{:.1f} ms"),
        ("process_cpu_ms_per_batch", "process CPU / batch", "{:.1f} ms"),
        ("cpu_ms_per_batch", "inference thread CPU / batch", "{:.1f} ms"),
        ("wall_ms_per_batch", "inference wall / batch", "{:.1f} ms"),
        ("batches", "batches", "{}"),
        ("missed_deadline", "missed deadline", "{}"),
        ("achieved_rate", "achieved rate", "{:.1f} req/s"),
    )
    rows = [(label, fmt.format(result[key])) for key, label, fmt in fields]
    title = (f"online tagging · {rate:g} req/s · {requests} requests · {summary.forward or 'custom'} forward · "
             f"{summary.threads} torch thread{'s' if summary.threads != 1 else ''}")
    console.print(metric_table(title, rows))
    if summary.p50_ms <= P50_TARGET_MS:
        ok(f"p50 {summary.p50_ms:.1f} ms meets the {P50_TARGET_MS:g} ms target")
    else:
        console.print(f"[yellow]![/yellow] p50 {summary.p50_ms:.1f} ms misses the {P50_TARGET_MS:g} ms target")


def register(group: typer.Typer) -> None:
    group.command("tagger")(tagger)
