"""Command groups whose subcommands live in several modules (``bench``, ``profile``).

A group is added to the app only when at least one of its modules is importable, so ``--help`` lists only
commands that exist. Each listed module defines ``register(group: typer.Typer) -> None``.
"""

from __future__ import annotations

import importlib

import typer

GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "profile": (
        "Step-time profiles: list, show, predict, and measure one on a GPU.",
        ("blockctl.cli.profile", "blockctl.cli.profile_run", "blockctl.cli.profile_engine"),
    ),
    "bench": (
        "Benchmarks: load generation, policy comparison, capacity search, component speed.",
        (
            "blockctl.cli.bench_run",
            "blockctl.cli.bench_predictor",
            "blockctl.cli.bench_compare",
            "blockctl.cli.bench_bound",
            "blockctl.cli.bench_replies",
            "blockctl.cli.bench_engine",
            "blockctl.cli.bench_emulator",
            "blockctl.cli.bench_tagger",
            "blockctl.cli.bench_overhead",
            "blockctl.cli.bench_faults",
            "blockctl.cli.bench_autoscale",
            "blockctl.cli.bench_badinput",
            "blockctl.cli.bench_exposition",
        ),
    ),
}


def register(app: typer.Typer) -> None:
    for name, (help_text, modules) in GROUPS.items():
        group = typer.Typer(help=help_text, no_args_is_help=True)
        for module in modules:
            importlib.import_module(module).register(group)
        if modules:
            app.add_typer(group, name=name)
