"""``blockctl bench faults``: inject kills, stops and connection resets into a local cluster under load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from blockctl.cli.ui import console, fail, handle_errors, ok, print_json

_COLUMNS = (("sent", "requests"), ("completed", "completed"), ("failed_before_token", "failed before any token"),
            ("cut_with_error_event", "cut mid-stream, error event"),
            ("cut_connection_broken", "cut mid-stream, connection lost"), ("cut_silently", "cut silently"),
            ("hung", "hung"))


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render(r: dict[str, Any]) -> None:
    o = r["options"]
    table = Table(title=f"fault drill: {o['instances']} instances, {o['schedulers']} schedulers ({o['policy']}), "
                        f"{o['concurrency']} concurrent requests ({r['wall_s']:.0f} s, load "
                        f"{r['load_avg_1m']:.1f} on {r['machine_cpus']} CPUs)")
    phases, tot = r["phases"], r["total"]
    table.add_column("")
    for row in phases:
        table.add_column(f"{row['scenario']}\n{row['target']}".replace("http://", ""), justify="right")
    table.add_column("all", justify="right", style="bold")
    for key, label in _COLUMNS:
        table.add_row(label, *(str(row["requests"][key]) for row in phases), str(tot[key]))
    table.add_row("longest request", *(_s(row["requests"]["longest_s"]) for row in phases), _s(tot["longest_s"]))
    table.add_row("out of rotation after", *(_s(row["out_s"]) for row in phases), "")
    table.add_row("back in rotation after", *(_s(row["back_s"]) for row in phases), "")
    console.print(table)
    console.print(f"engine runs (engines' request_success_total): {r['engine_executions']}; beyond the replies "
                  f"delivered: {r['runs_beyond_replies']} (each a request whose reply was lost in a fault, or a "
                  f"duplicate); executed more than once, at least: {r['duplicates_at_least']}")
    drill = r.get("drill")
    if drill:
        console.print(f"single-request drill (one non-streamed request at a time on a quiet cluster, its "
                      f"scheduler-agent connection reset mid-run): client statuses {drill['statuses']}, "
                      f"engine runs {drill['engine_runs']}")
    if r["failure_details"]:
        console.print("[dim]what failed:[/dim]")
        for what, n in r["failure_details"].items():
            console.print(f"[dim]  {n} × {what}[/dim]")
    sick = [row for row in r["phases"] if row["scenario"] in ("kill-engine", "kill-agent", "stop-engine",
                                                               "stop-agent")]
    outs = [row["out_s"] if row["out_s"] is not None else float("inf") for row in sick]
    checks = (
        (r["duplicates_at_least"] == 0 and not (drill and drill["executed_more_than_once"]),
         "executed more than once: "
         f"{r['duplicates_at_least'] + (drill['executed_more_than_once'] if drill else 0)}"),
        (tot["hung"] == 0, f"hung: {tot['hung']}"),
        (tot["cut_silently"] == 0, f"cut silently: {tot['cut_silently']}"),
        (tot["failed_before_token"] == 0, f"failed before any token: {tot['failed_before_token']}"),
        (all(o <= r["targets"]["out_of_rotation_s"] for o in outs),
         (f"sick instances out of rotation within {max(outs, default=0):.2f} s" if all(o < float("inf")
          for o in outs) else "a sick instance never left rotation")
         + f" (target ≤ {r['targets']['out_of_rotation_s']:.0f} s)"),
    )
    for good, text in checks:
        ok(text) if good else fail(text)


@handle_errors
def faults(
    scenarios: str = typer.Option(
        "reset,kill-engine,kill-agent,kill-scheduler,stop-engine,stop-agent",
        help="Comma-separated faults, run in this order."),
    instances: int = typer.Option(3, help="Emulated instances (at least 3)."),
    schedulers: int = typer.Option(2, help="Scheduler daemons (at least 2)."),
    policy: str = typer.Option("least-outstanding", help="Routing policy of the schedulers (one that spreads "
                               "the load, so every faulty instance has requests in flight)."),
    concurrency: int = typer.Option(8, help="Requests kept in flight (half of them streamed)."),
    max_tokens: int = typer.Option(24, help="Tokens per request (ignore_eos: a short reply is a cut)."),
    observe: float = typer.Option(4.0, help="Seconds each fault stays in place before recovery."),
    base_port: int = typer.Option(19000, help="The local cluster's base port (loopback only)."),
    logs: Path | None = typer.Option(None, help="Keep the cluster's state dir and logs here."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run a load through a local cluster while killing (-9) an engine, an agent and a scheduler, stopping
    (SIGSTOP) an engine and an agent, and resetting scheduler↔agent connections; count how every request
    ended, the runs the engines report, and how fast a sick instance left rotation and came back."""
    from blockctl.bench.faults import FaultOptions, run_faults

    opts = FaultOptions(scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()),
                        instances=instances, schedulers=schedulers, policy=policy, concurrency=concurrency,
                        max_tokens=max_tokens, observe_s=observe, base_port=base_port)
    opts.validate()
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    if json_out:
        print_json(run_faults(opts, logs=logs))
        return
    with console.status("fault drill running"):
        report = run_faults(opts, logs=logs)
    render(report)


def register(group: typer.Typer) -> None:
    group.command("faults")(faults)
