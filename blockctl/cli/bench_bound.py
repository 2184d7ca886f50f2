"""`blockctl bench bound`: the throughput no router can beat on a workload and an engine setting."""

from __future__ import annotations

import dataclasses

import typer
from rich.table import Table

from blockctl.bench.sim.run import SimSetup, prepare
from blockctl.bench.workloads import WORKLOADS
from blockctl.cli.ui import console, handle_errors, print_json
from blockctl.engine.profile import DEFAULT_PROFILE
from blockctl.errors import ConfigError


def register(group: typer.Typer) -> None:
    @group.command("bound")
    @handle_errors
    def bound_cmd(
        workload: str = typer.Option("sharegpt", "--workload", help=f"{', '.join(WORKLOADS)} or a file."),
        requests: int = typer.Option(10_000, "--requests", min=1, help="Requests of the workload sampled."),
        seed: int = typer.Option(0, "--seed", help="Seed of the workload sample."),
        instances: int = typer.Option(12, "--instances", min=1, help="Number of instances."),
        profile: str = typer.Option(DEFAULT_PROFILE, "--profile", help="Step-time profile (one for all)."),
        max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Engine setting."),
        max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", help="Engine setting."),
        num_gpu_blocks: int | None = typer.Option(None, "--num-gpu-blocks", help="KV blocks per instance."),
        caching: bool = typer.Option(True, "--enable-prefix-caching/--no-enable-prefix-caching",
                                     help="vLLM's prefix cache (its default: on)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The request rate no routing policy can sustain on these engines (blockctl/bench/bound.py): seats,
        KV blocks (a shared prefix held once while any request needs it) and step time, with everything a router
        could lose left out. Read a capacity figure against it."""
        from blockctl.bench.bound import ceiling, shapes

        # the simulator's own preparation: the requests, settings and block hashes a capacity run uses
        setup = SimSetup(instances, profile, max_num_seqs, max_num_batched_tokens, num_gpu_blocks, workload,
                         requests, seed=seed, prefix_caching=caching)
        setup.validate()
        if len(set(setup.profile_names())) > 1:
            raise ConfigError("the bound takes one profile for every instance", key="--profile")
        prep = prepare(setup)
        items, config, prof = prep.items, prep.config, prep.profile
        b = ceiling(shapes(items, prep.hashes, config.block_size), config, prof.model, instances)
        if as_json:
            print_json({"workload": workload, "requests": len(items), "instances": instances, "profile": prof.name,
                        "max_num_seqs": config.max_num_seqs, "max_num_batched_tokens": config.max_num_batched_tokens,
                        "num_gpu_blocks": config.num_gpu_blocks, "prefix_caching": caching,
                        **dataclasses.asdict(b)})
            return
        table = Table(title=f"throughput bound: {workload} ({len(items)} requests) on {instances} × {prof.name}, "
                            f"{config.max_num_seqs} seqs, {config.num_gpu_blocks} KV blocks")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("no router sustains more than", f"[bold]{b.requests_per_s:.1f} req/s[/bold]  "
                                                       f"({b.output_tokens_per_s:,.0f} output tokens/s)")
        table.add_row("what binds there", b.limit)
        table.add_row("per instance: decoding sequences, step", f"{b.batch:.1f}, {b.step_ms:.2f} ms")
        table.add_row("per instance: KV blocks held (shared prefixes once)", f"{b.kv_blocks_used:,.0f}")
        table.add_row("time on prompt tokens no cache could hold", f"{b.prefill_share:.1%}")
        table.add_row("hit rate of a cache that kept everything", f"{b.best_hit_rate:.1%}")
        console.print(table)
