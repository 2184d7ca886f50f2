"""`blockctl scale`: resize the cluster now (--instances N), or start/stop the autoscaling controller (--auto)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import typer
import yaml

from blockctl.cli.ui import console, handle_errors, ok
from blockctl.cluster import autoscale_local, autoscaler
from blockctl.cluster.scaler import AutoscaleConfig
from blockctl.cluster.state import load_state, resolve_state_dir
from blockctl.errors import ConfigError, StateError


def _spec_section(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    section = data.get("autoscale") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError("no 'autoscale:' mapping", source=str(path), key="autoscale",
                          hint="autoscale: {min_instances: 1, max_instances: 4, slo_ttft_s: 2}")
    return section


def register(app: typer.Typer) -> None:
    @app.command("scale")
    @handle_errors
    def scale(
        instances: int | None = typer.Option(None, "--instances", "-n", help="Serving instances wanted now."),
        auto: bool = typer.Option(False, "--auto", help="Start the autoscaling controller in the background."),
        advisory: bool = typer.Option(False, "--advisory", help="--auto: only log decisions, do nothing."),
        stop: bool = typer.Option(False, "--stop", help="Stop the autoscaling controller."),
        config: Path | None = typer.Option(None, "-c", "--config", help="Spec with an 'autoscale:' section."),
        policy: str | None = typer.Option(None, "--policy", help="predictive | reactive (overrides the spec)."),
        min_instances: int | None = typer.Option(None, "--min", help="Fewest instances."),
        max_instances: int | None = typer.Option(None, "--max", help="Most instances."),
        slo_ttft: float | None = typer.Option(None, "--slo-ttft", help="SLO: P99 TTFT at most this (s)."),
        interval: float | None = typer.Option(None, "--interval", help="Seconds between decisions."),
        startup: float | None = typer.Option(None, "--startup", help="Expected start-up time of an instance."),
        startup_delay: float = typer.Option(0.0, "--startup-delay", help="Emulated start-up of new instances."),
        timeout: float = typer.Option(300.0, "--timeout", help="--instances: seconds to wait for start/drain."),
        state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory (as for up)."),
    ) -> None:
        """Add emulated instances (health-waited) or drain some (stopped once idle); or run the controller."""
        sd = resolve_state_dir(state_dir)
        if sum((instances is not None, auto, stop)) != 1:
            raise ConfigError("give exactly one of --instances N, --auto or --stop", key="scale",
                              hint="blockctl scale --instances 3")
        if stop:
            pid = autoscaler.stop(sd)
            ok(f"autoscaler (pid {pid}) stopped" if pid else "no autoscaler was running")
            return
        state = load_state(sd)
        if state is None:
            raise StateError(f"no cluster recorded in {sd}", hint="blockctl up --local")
        if instances is not None and state.kind == "ssh":
            from blockctl.cluster.autoscale_ssh import scale_ssh

            added, removed = asyncio.run(scale_ssh(sd, instances, timeout_s=timeout,
                                                   say=lambda m: console.print(f"[dim]{m}[/dim]")))
            for label in added:
                ok(f"{label}: added")
            for label in removed:
                ok(f"{label}: drained and stopped")
            state = load_state(sd)
            ok(f"{len(state.serving()) if state else 0} instance(s) serving")
            return
        if instances is not None:
            t0 = time.monotonic()
            with console.status(f"scaling to {instances} instance(s)"):
                added, removed = autoscale_local.scale_to(sd, instances, startup_delay_s=startup_delay,
                                                          timeout_s=timeout)
            state = autoscale_local.local_state(sd)
            took = time.monotonic() - t0
            for inst in state.instances:
                if inst.name in added:
                    ok(f"{inst.name} serving (healthy {inst.settings.get('startup_s', '?')} s after start)")
            for name in removed:
                ok(f"{name} drained and stopped")
            ok(f"{len(state.serving())} instance(s) serving ({took:.1f} s)")
            return
        section = _spec_section(config) if config is not None else {}
        if config is None and state.kind == "ssh":
            from blockctl.cluster.ssh.lifecycle import spec_of

            section = dict(spec_of(state).autoscale)
        overrides = {"policy": policy, "min_instances": min_instances, "max_instances": max_instances,
                     "slo_ttft_s": slo_ttft, "interval_s": interval, "startup_s": startup}
        section.update({k: v for k, v in overrides.items() if v is not None})
        if startup is None and "startup_s" not in section and startup_delay > 0:
            section["startup_s"] = startup_delay + 2.0  # the emulator's delay plus process start
        cfg = AutoscaleConfig.from_mapping(section, source=str(config) if config else None)
        pid = autoscaler.start(sd, cfg, advisory=advisory, startup_delay_s=startup_delay)
        mode = "advisory (logs decisions only)" if advisory else "acting"
        ok(f"autoscaler running, pid {pid}, {cfg.policy}, {cfg.min_instances}..{cfg.max_instances} instances, "
           f"SLO P99 TTFT {cfg.slo_ttft_s:g} s, {mode}")
        console.print(f"[dim]decisions: {sd / autoscaler.DECISIONS_FILE}; stop: blockctl scale --stop[/dim]")
