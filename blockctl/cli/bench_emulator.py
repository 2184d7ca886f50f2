"""``blockctl bench emulator``: the emulator's own CPU cost per step relative to the emulated step time."""

from __future__ import annotations

import asyncio

import typer

from blockctl.cli.ui import console, handle_errors, metric_table, ok, print_json
from blockctl.engine.profile import DEFAULT_PROFILE


@handle_errors
def emulator(
    running: int = typer.Option(48, min=1, help="Streaming requests kept running during the measurement."),
    duration: float = typer.Option(10.0, min=0.5, help="Seconds of the measurement window."),
    prompt_tokens: int = typer.Option(200, min=1, help="Prompt length of each request."),
    profile: str = typer.Option(DEFAULT_PROFILE, help="Step-time profile the emulator runs."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Start an emulator process, hold RUNNING streams on it, and report its CPU time per engine step."""
    from blockctl_agents.emulator.bench import as_dict, emulator_process, free_port, measure

    port = free_port()
    with emulator_process(port, "--profile", profile, "--max-num-seqs", str(max(running, 1))) as proc:
        result = asyncio.run(measure(f"http://127.0.0.1:{port}", proc.pid, running=running, duration=duration,
                                     prompt_tokens=prompt_tokens))
    if json_out:
        print_json({"profile": profile, **as_dict(result)})
        return
    rows = [
        ("steps measured", f"{result.steps}"),
        ("tokens per step", f"{result.tokens_per_step:.1f}"),
        ("emulated step (profile)", f"{result.emulated_ms_per_step:.2f} ms"),
        ("emulator CPU per step", f"{result.cpu_ms_per_step:.2f} ms"),
        ("  engine loop", f"{result.engine_ms_per_step:.2f} ms"),
        ("  HTTP streaming + rest", f"{result.http_ms_per_step:.2f} ms"),
        ("wall / emulated time", f"{result.wall_over_emulated:.3f}"),
        ("late per step", f"{result.late_ms_per_step:.3f} ms"),
    ]
    console.print(metric_table(f"emulator overhead ({profile}, {result.running} running streams)", rows))
    ok(f"emulator CPU is {100 * result.cpu_over_emulated:.1f}% of the emulated step time")


def register(group: typer.Typer) -> None:
    group.command("emulator")(emulator)
