"""``blockctl bench overhead``: the scheduler's added latency (p50, p99) and its request rate on one core."""

from __future__ import annotations

import contextlib
from typing import Any

import typer

from blockctl.cli.ui import console, fail, handle_errors, metric_table, ok, print_json
from blockctl.errors import ConfigError
from blockctl.scheduler.policies import POLICIES


def _render(r: dict[str, Any]) -> None:
    lat, thr, targets = r["latency"], r["throughput"], r["targets"]
    rows = [
        ("direct p50 / p99", f"{lat['direct_ms']['p50']:.3f} / {lat['direct_ms']['p99']:.3f} ms"),
        ("via scheduler p50 / p99", f"{lat['scheduler_ms']['p50']:.3f} / {lat['scheduler_ms']['p99']:.3f} ms"),
        ("added p50 / p99", f"{lat['added_p50_ms']:.3f} / {lat['added_p99_ms']:.3f} ms"),
        ("daemon CPU per request (sequential)", f"{lat['scheduler_cpu_ms_per_request']:.3f} ms"),
        (f"throughput ({thr['concurrency']} connections)", f"{thr['req_per_s']:.0f} req/s"),
        ("daemon CPU use during it", f"{thr['scheduler_cpu_pct']:.0f} % of one core"),
        ("requests per daemon CPU-second", "-" if thr["req_per_cpu_second"] is None
         else f"{thr['req_per_cpu_second']:.0f}"),
        ("errors", str(thr["errors"])),
        ("machine load (1 min)", f"{r['load_avg_1m']:.1f} on {r['machine_cpus']} CPUs"),
    ]
    title = (f"scheduler overhead (policy {r['policy']}, {r['instances']} null agents, "
             f"throughput run pinned to CPU {r['scheduler_cpu']} of {r['machine_cpus']})")
    console.print(metric_table(title, rows, show_header=True))
    verdicts = (
        (lat["added_p50_ms"] <= targets["added_p50_ms"], f"added p50 {lat['added_p50_ms']:.2f} ms "
         f"(target ≤ {targets['added_p50_ms']:.0f} ms)"),
        (thr["req_per_s"] >= targets["req_per_s"], f"{thr['req_per_s']:.0f} req/s on one core "
         f"(target ≥ {targets['req_per_s']:.0f})"),
    )
    for good, text in verdicts:
        ok(text) if good else fail(text)
    if thr["req_per_cpu_second"] is not None:
        console.print(f"[dim]extrapolated to a whole idle core: ≈ {thr['req_per_cpu_second']:.0f} req/s "
                      f"(requests per daemon CPU-second)[/dim]")
    if r["load_avg_1m"] > r["machine_cpus"]:
        console.print("[dim]the machine was busy (load above its CPU count): figures are pessimistic; "
                      "'requests per daemon CPU-second' is what one whole core would sustain[/dim]")


def _render_agents(r: dict[str, Any]) -> None:
    lat, targets = r["latency"], r["targets"]
    rows = [
        ("engine direct p50 / p99", f"{lat['direct_ms']['p50']:.3f} / {lat['direct_ms']['p99']:.3f} ms"),
        ("via scheduler + agent p50 / p99",
         f"{lat['scheduler_ms']['p50']:.3f} / {lat['scheduler_ms']['p99']:.3f} ms"),
        ("added p50 / p99", f"{lat['added_p50_ms']:.3f} / {lat['added_p99_ms']:.3f} ms"),
        ("scheduler CPU per request", f"{lat['scheduler_cpu_ms_per_request']:.3f} ms"),
        ("machine load (1 min)", f"{r['load_avg_1m']:.1f} on {r['machine_cpus']} CPUs"),
    ]
    title = (f"latency added by the routing path (policy {r['policy']}, {r['instances']} emulated instances "
             f"with real agents, {lat['requests']} sequential 1-token completions per path)")
    console.print(metric_table(title, rows, show_header=True))
    for key, name in (("added_p50_ms", "p50"), ("added_p99_ms", "p99")):
        text = f"added {name} {lat[key]:.2f} ms (target ≤ {targets[key]:.0f} ms)"
        ok(text) if lat[key] <= targets[key] else fail(text)


def bench_overhead(
    requests: int = typer.Option(3000, help="Requests in the throughput run."),
    latency_requests: int = typer.Option(500, help="Sequential requests per path in the latency run."),
    concurrency: int = typer.Option(32, help="Connections in the throughput run."),
    policy: str = typer.Option("block", help="Routing policy of the measured daemon."),
    instances: int = typer.Option(2, help="Null agents the daemon routes over."),
    agents: str = typer.Option("null", help="null: instant stand-in agents (the scheduler's own cost); "
                               "real: a local cluster of emulated engines behind real agents (added latency "
                               "of scheduler + agent + /predict over calling the engine directly)."),
    base_port: int = typer.Option(18000, help="With --agents real: the local cluster's base port."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Added latency of the scheduler path vs calling an instance directly, and one daemon's request rate.

    The daemon (pinned to one CPU for the throughput run) sits in front of null agents that answer instantly,
    so the figures are the scheduler's own cost (parse, count tokens, ask every agent /predict, choose,
    forward, relay).
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy '{policy}'; valid: {', '.join(POLICIES)}", key="policy")
    for key, value in (("requests", requests), ("latency-requests", latency_requests),
                       ("concurrency", concurrency), ("instances", instances)):
        if value < 1:
            raise ConfigError(f"must be at least 1, got {value}", key=key)
    if agents not in ("null", "real"):
        raise ConfigError(f"'{agents}': expected null or real", key="agents")
    if agents == "real":
        from blockctl.scheduler.overhead_agents import run_overhead_agents

        with console.status("measuring the routing path in front of real agents") if not json_out \
                else contextlib.nullcontext():
            real = run_overhead_agents(instances=instances, latency_requests=latency_requests, policy=policy,
                                       base_port=base_port)
        print_json(real) if json_out else _render_agents(real)
        return
    from blockctl.scheduler.overhead import run_overhead

    if json_out:
        result = run_overhead(requests=requests, concurrency=concurrency, policy=policy, instances=instances,
                              latency_requests=latency_requests)
        print_json(result)
        return
    with console.status("measuring the scheduler in front of null agents"):
        result = run_overhead(requests=requests, concurrency=concurrency, policy=policy, instances=instances,
                              latency_requests=latency_requests)
    _render(result)


def register(group: typer.Typer) -> None:
    group.command("overhead")(handle_errors(bench_overhead))
