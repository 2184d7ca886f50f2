"""Terminal output shared by every command: ✓/⨯ lines, tables, and the one place errors are rendered."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from blockctl.errors import BlockctlError, HostError

if TYPE_CHECKING:
    from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


def ok(message: str) -> None:
    console.print(f"[green]✓[/green] {message}")


def fail(message: str, hint: str | None = None) -> None:
    err_console.print(f"[red]⨯[/red] {message}")
    if hint:
        err_console.print(f"  [dim]try:[/dim] {hint}")


def metric_table(title: str, rows: Iterable[tuple[str, str]], *, show_header: bool = False) -> Table:
    """A two-column table, "metric" and right-aligned "value", one row per (label, value)."""
    from rich.table import Table

    table = Table(title=title, show_header=show_header)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Render BlockctlError as a ⨯ line (plus hint) and exit 1; a traceback only with BLOCKCTL_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BlockctlError as exc:
            if os.environ.get("BLOCKCTL_DEBUG"):
                raise
            fail(exc.message, exc.hint)
            if isinstance(exc, HostError) and exc.stderr_tail:
                err_console.print(f"  [dim]{exc.stderr_tail.strip()}[/dim]")
            raise typer.Exit(1) from None

    return wrapper
