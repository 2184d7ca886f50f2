"""Entry point: builds the typer app from the command modules listed in COMMAND_MODULES."""

from __future__ import annotations

import importlib

import typer

from blockctl import __version__

# Each module defines ``register(app: typer.Typer) -> None``; order is the order in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "blockctl.cli.cluster",
    "blockctl.cli.groups",
    "blockctl.cli.config",
    "blockctl.cli.logs",
    "blockctl.cli.tagger",
    "blockctl.cli.scale",
)

app = typer.Typer(
    name="blockctl",
    help="Cluster manager for LLM serving that routes each request to the instance with the lowest predicted latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"blockctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """blockctl: predictive load balancing for vLLM clusters."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
