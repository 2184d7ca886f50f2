"""``blockctl bench exposition``: what rendering and parsing Prometheus /metrics costs per call."""

from __future__ import annotations

import typer

from blockctl.cli.ui import console, handle_errors, metric_table, print_json


@handle_errors
def exposition(
    calls: int = typer.Option(2000, min=10, help="Calls per timing round (5 rounds, the median is shown)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time the emulator's, agent's and scheduler's /metrics render and the agent's parse of an engine's."""
    from blockctl.bench.exposition import as_dicts, measure

    costs = measure(calls)
    if json_out:
        print_json({"costs": as_dicts(costs)})
        return
    rows = [(c.what, f"{c.us_per_call:.1f} µs ({c.text_bytes} B)") for c in costs]
    console.print(metric_table("Prometheus exposition cost per call (median of 5 rounds)", rows))


def register(group: typer.Typer) -> None:
    group.command("exposition")(exposition)
