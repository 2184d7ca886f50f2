"""`blockctl bench reply-lengths`: the table that makes emulators reply with the workload's own lengths."""

from __future__ import annotations

from pathlib import Path

import typer

from blockctl import replytable
from blockctl.bench.livelengths import reply_table
from blockctl.bench.loadgen import APIS
from blockctl.bench.workloads import WORKLOADS
from blockctl.cli.ui import handle_errors, ok
from blockctl.errors import ConfigError


def register(group: typer.Typer) -> None:
    @group.command("reply-lengths")
    @handle_errors
    def reply_lengths(
        out: Path = typer.Option(..., "--out", help="Where to write the table (JSON)."),
        workload: str = typer.Option("sharegpt", "--workload", help=f"{', '.join(WORKLOADS)} or a file."),
        requests: int = typer.Option(1000, "--requests", min=1, help="As the benchmark will send."),
        seed: int = typer.Option(0, "--seed", help="As the benchmark will use."),
        api: str = typer.Option("completions", "--api", help="completions | chat, as the benchmark will send."),
    ) -> None:
        """Write the workload's reply length per prompt (keyed by a hash) for `up --local --reply-lengths`.

        Give the same workload, --requests, --seed and --api as the live benchmark: the emulators then reply
        to its prompts with the workload's lengths, while the load generator sends no length information
        and the schedulers never see the table.
        """
        if api not in APIS:
            raise ConfigError(f"'{api}': expected one of {', '.join(APIS)}", key="--api")
        table = reply_table(workload, requests, seed, api)
        replytable.save(out, table, source={"workload": workload, "requests": requests, "seed": seed, "api": api})
        ok(f"reply lengths of {len(table)} prompts written to {out}")
