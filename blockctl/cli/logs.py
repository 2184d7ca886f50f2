"""`blockctl logs HOST [--engine|--agent] [-f]`: a host's bootstrap log, or its engines' or agents' logs."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Literal

import typer

from blockctl.cli.ui import handle_errors
from blockctl.cluster.ssh.hostlog import host_log_path
from blockctl.cluster.state import ClusterState, load_state, logs_dir, resolve_state_dir
from blockctl.errors import ClusterError, StateError

STATE_DIR_HELP = (
    "State directory (cluster.json, token, logs). Default: $BLOCKCTL_STATE_DIR or ~/.local/state/blockctl."
)


def _last_lines(path: Path, lines: int) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in deque(f, maxlen=lines)]


def _follow_local(paths: list[Path], lines: int) -> None:
    """Print the last ``lines`` of each file, then what is appended, until Ctrl-C (like ``tail -F``)."""
    offsets: dict[Path, int] = {}
    for path in paths:
        if len(paths) > 1:
            typer.echo(f"==> {path} <==")
        if path.exists():
            for line in _last_lines(path, lines):
                typer.echo(line)
            offsets[path] = path.stat().st_size
    try:
        while True:
            time.sleep(0.5)
            for path in paths:
                size = path.stat().st_size if path.exists() else 0
                start = offsets.get(path, 0)
                if size < start:  # truncated or replaced: start over
                    start = 0
                if size > start:
                    with path.open("rb") as f:
                        f.seek(start)
                        typer.echo(f.read(size - start).decode("utf-8", "replace"), nl=False)
                offsets[path] = size
    except KeyboardInterrupt:
        return


def _local_files(state_dir: Path, state: ClusterState, host: str, role: str) -> list[Path]:
    insts = [i for i in state.instances if host in (i.name, i.host)]
    if not insts:
        names = ", ".join(i.name for i in state.instances) or "none"
        raise ClusterError(f"no instance or host named '{host}' (instances: {names})", hint="blockctl status")
    return [logs_dir(state_dir) / f"{i.name}-{role}.log" for i in insts]


def _show(paths: list[Path], lines: int, follow: bool) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing and not follow:
        raise StateError(f"no log at {missing[0]}", hint="blockctl status")
    if follow:
        _follow_local(paths, lines)
        return
    for path in paths:
        if len(paths) > 1:
            typer.echo(f"==> {path} <==")
        for line in _last_lines(path, lines):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    @app.command("logs")
    @handle_errors
    def logs(
        host: str = typer.Argument(
            ..., help="Host name from the spec (or an instance name of a local cluster)."
        ),
        engine: bool = typer.Option(False, "--engine", help="The engine logs (on the host)."),
        agent: bool = typer.Option(False, "--agent", help="The predictor agent logs (on the host)."),
        follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines until Ctrl-C."),
        lines: int = typer.Option(100, "-n", "--lines", min=1, help="How many last lines to show."),
        state_dir: Path | None = typer.Option(None, help=STATE_DIR_HELP),
    ) -> None:
        """Without --engine/--agent: the host's bootstrap log (stages, commands, exit codes) of `up`/`down`."""
        if engine and agent:
            raise ClusterError(
                "give at most one of --engine and --agent", hint=f"blockctl logs {host} --engine"
            )
        sd = resolve_state_dir(state_dir)
        state = load_state(sd)
        role: Literal["engine", "agent"] | None = "engine" if engine else "agent" if agent else None
        if state is not None and state.kind == "local":
            _show(_local_files(sd, state, host, role or "engine"), lines, follow)
            return
        if role is None:
            path = host_log_path(logs_dir(sd), host)
            if not path.exists():
                raise StateError(
                    f"no bootstrap log for host '{host}' in {sd}", hint="blockctl up -c cluster.yaml"
                )
            _show([path], lines, follow)
            return
        if state is None:
            raise StateError(f"no cluster recorded in {sd}", hint="blockctl up -c cluster.yaml")
        from blockctl.cluster.ssh.lifecycle import remote_logs

        try:
            asyncio.run(remote_logs(sd, host, role, lines=lines, follow=follow, write=typer.echo))
        except KeyboardInterrupt:
            return
