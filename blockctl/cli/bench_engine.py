"""`blockctl bench engine`: how fast the engine model steps, fast-forwards and answers what-if questions."""

from __future__ import annotations

import dataclasses

import typer
from rich.table import Table

from blockctl.cli.ui import console, handle_errors, print_json
from blockctl.engine.profile import DEFAULT_PROFILE, load_profile


def register(group: typer.Typer) -> None:
    @group.command("engine")
    @handle_errors
    def engine_cmd(
        profile: str = typer.Option(DEFAULT_PROFILE, "--profile", help="Step-time profile (blockctl profile list)."),
        running: int = typer.Option(48, "--running", min=1, help="Running requests on the instance."),
        waiting: int = typer.Option(32, "--waiting", min=0, help="Waiting requests (for what-if latency)."),
        requests: int = typer.Option(3000, "--requests", min=100, help="Requests in the fast-forward stream."),
        predicts: int = typer.Option(2000, "--predicts", min=100, help="What-if calls timed."),
        wall: bool = typer.Option(False, "--wall", help="Wall clock instead of the process's CPU time."),
        prefix_hit: float = typer.Option(0.0, "--prefix-hit", min=0.0, max=1.0,
                                         help="Prefix caching on; this fraction of every waiting and new prompt "
                                              "is cached (what-if)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Engine-model speed: exact steps/s, fast-forward tokens/s, whatif.predict µs p50/p99."""
        from blockctl.engine.benchmark import measure

        prof = load_profile(profile)
        speed = measure(prof, running=running, waiting=waiting, requests=requests, predicts=predicts, wall=wall,
                        prefix_hit=prefix_hit)
        if as_json:
            print_json({"profile": prof.name, "clock": "wall" if wall else "cpu", **dataclasses.asdict(speed)})
            return
        clock = "wall clock" if wall else "CPU time of this process"
        table = Table(title=f"engine model speed ({prof.name}; one core, {clock})")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row(f"exact steps/s at {running} running",
                      f"{speed.steps_per_s:,.0f}  ({1e6 / speed.steps_per_s:.0f} µs per "
                      f"{speed.emulated_step_ms:.1f} ms step)")
        table.add_row("fast-forward generated tokens/s", f"{speed.ff_tokens_per_s:,.0f}")
        table.add_row("fast-forward simulated s per second spent", f"{speed.ff_sim_speedup:,.0f}")
        table.add_row("step-by-step generated tokens/s", f"{speed.stepwise_tokens_per_s:,.0f}")
        cached = f", {prefix_hit:.0%} of prompts cached" if prefix_hit else ""
        table.add_row(f"whatif.predict at {running}+{waiting}{cached}: p50 / p99",
                      f"{speed.predict_p50_us:,.0f} / {speed.predict_p99_us:,.0f} µs")
        table.add_row("  (exact engine path, p50)", f"{speed.predict_exact_p50_us:,.0f} µs")
        console.print(table)
