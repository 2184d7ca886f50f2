"""`blockctl config schema` and `blockctl config check FILE`: the spec's JSON Schema and validation."""

from __future__ import annotations

from pathlib import Path

import typer

from blockctl.cli.ui import handle_errors, ok, print_json
from blockctl.cluster.spec import json_schema, load_spec

EXAMPLE = Path(__file__).resolve().parent.parent / "cluster" / "examples" / "cluster.yaml"


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="The cluster spec (YAML): JSON Schema, validation, an example.", no_args_is_help=True
    )

    @group.command("schema")
    def schema() -> None:
        """Print the JSON Schema of the cluster spec."""
        print_json(json_schema())

    @group.command("check")
    @handle_errors
    def check(file: Path = typer.Argument(..., help="Cluster spec to validate.")) -> None:
        """Validate a cluster spec; names the file, key and problem when it is wrong."""
        spec = load_spec(file)
        active = [h.label for h in spec.hosts if not h.standby]
        standby = [h.label for h in spec.hosts if h.standby]
        ok(
            f"{file}: valid — {len(active)} host(s) {', '.join(active)}"
            + (f", {len(standby)} standby" if standby else "")
            + f"; model {spec.model.id}; engine {spec.engine.kind}"
        )

    @group.command("example")
    def example() -> None:
        """Print an annotated example spec (every key documented)."""
        typer.echo(EXAMPLE.read_text(encoding="utf-8"), nl=False)

    app.add_typer(group, name="config")
