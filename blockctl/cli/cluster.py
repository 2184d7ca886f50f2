"""`blockctl up`, `blockctl down`, `blockctl status`: bring a cluster up (local or SSH), stop it, inspect it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from blockctl.cli.ui import console, err_console, fail, handle_errors, ok, print_json
from blockctl.cluster import local
from blockctl.cluster.schedulers import SchedulerSpec, converge_schedulers, scheduler_specs
from blockctl.cluster.state import ClusterState, load_state, resolve_state_dir, save_state
from blockctl.cluster.status import ClusterStatus, gather_status
from blockctl.engine.profile import DEFAULT_PROFILE
from blockctl.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from blockctl.cluster.spec import ClusterSpec

STATE_DIR_HELP = "State directory (cluster.json, token, logs). Default: $BLOCKCTL_STATE_DIR or ~/.local/state/blockctl."


def _print_up(state: ClusterState) -> None:
    for inst in state.instances:
        ok(f"{inst.name}: {inst.engine_url} (pid {inst.pids.get('engine', '-')}), agent {inst.agent_url} "
           f"(pid {inst.pids.get('agent', '-')})")
    for sched in state.schedulers:
        ok(f"scheduler {sched.url} (pid {sched.pid}, policy {state.policy})")
    if state.schedulers:
        console.print(f"\nOpenAI endpoint: [bold]{state.schedulers[0].url}/v1[/bold]"
                      + (f" (+{len(state.schedulers) - 1} more)" if len(state.schedulers) > 1 else ""))
    console.print("[dim]next: blockctl status[/dim]")


def _up_ssh(spec_file: Path, state_dir: Path) -> ClusterState:
    from blockctl.cluster.spec import load_spec
    from blockctl.cluster.ssh.lifecycle import up as ssh_up

    spec = load_spec(spec_file)
    state, outcomes = asyncio.run(ssh_up(spec, spec_file=str(spec_file), state_dir=state_dir))
    for outcome in outcomes:
        if outcome.ok:
            ok(f"{outcome.host}: {len(outcome.instances)} instance(s)" +
               (f" ({'; '.join(outcome.notes)})" if outcome.notes else ""))
        elif outcome.error is not None:
            log_hint = f"less {outcome.log_path}" if outcome.log_path else None
            fail(outcome.error.message, outcome.error.hint or log_hint)
            if outcome.error.stderr_tail.strip():
                err_console.print(f"[dim]{escape(outcome.error.stderr_tail.rstrip())}[/dim]")
    if not state.instances:
        raise ClusterError("no host came up", hint="blockctl up -c FILE (after fixing the hosts above)")
    state = dataclasses.replace(state, schedulers=converge_schedulers(state_dir, state.schedulers,
                                                                      _scheduler_specs(spec)))
    save_state(state_dir, state)
    return state


def _scheduler_specs(spec: ClusterSpec) -> list[SchedulerSpec]:
    """The scheduler daemons a cluster spec's ``scheduler`` section asks for."""
    s = spec.scheduler
    return scheduler_specs(s.daemons, base_port=s.port, policy=s.policy, host=s.host, tagger=s.tagger,
                           api_key_file=s.api_key_file, k=s.policy_params.get("k"), request_log=s.request_log,
                           request_log_enabled=s.request_log_enabled, request_log_max_mb=s.request_log_max_mb,
                           request_log_backups=s.request_log_backups, log_prompts=s.log_prompts,
                           predict_timeout_ms=s.predict_timeout_ms, max_retries=s.max_retries,
                           first_byte_floor_s=s.first_byte_floor_s, first_byte_factor=s.first_byte_factor,
                           idle_timeout_s=s.idle_timeout_s, drain_s=s.drain_s)


def _status_table(status: ClusterStatus) -> None:
    table = Table(title=f"{status.kind} cluster, policy {status.policy}",
                  caption="err: median |predicted - actual| / actual over recent requests")
    remote = status.kind != "local"
    cols = ("instance", *(("host",) if remote else ()), "health", "run", "wait", "KV %", "E2E err", "TTFT err",
            "done")
    for col in cols:
        table.add_column(col, justify="left" if col in ("instance", "host", "health") else "right",
                         no_wrap=True)

    def n(v: float | None, fmt: str = "{}") -> str:
        return "-" if v is None else fmt.format(v)

    for i in status.instances:
        health = "[green]healthy[/green]" if i.healthy else f"[red]{i.detail}[/red]"
        if i.status != "serving":
            health += f" ({i.status})"
        cells = (n(i.running), n(i.waiting), n(i.kv_used_pct, "{:.1f}"), n(i.e2e_error_p50_pct, "{:.1f} %"),
                 n(i.ttft_error_p50_pct, "{:.1f} %"), n(i.completed))
        table.add_row(i.name, *((i.host,) if remote else ()), health, *cells)
    console.print(table)
    sched = Table(title="schedulers")
    for col in ("endpoint", "pid", "health", "policy", "instances"):
        sched.add_column(col)
    for s in status.schedulers:
        sched.add_row(f"{s.url}/v1", n(s.pid), "[green]healthy[/green]" if s.healthy else "[red]down[/red]",
                      s.policy or "-", n(s.instances))
    console.print(sched)


def register(app: typer.Typer) -> None:
    @app.command("up")
    @handle_errors
    def up(
        local_: bool = typer.Option(False, "--local", help="Emulated instances on this machine (no GPU, no SSH)."),
        spec_file: Path | None = typer.Option(None, "-c", "--config", help="Cluster spec (YAML) for SSH hosts."),
        instances: int = typer.Option(2, "--instances", "-n", help="Emulated instances (--local)."),
        schedulers: int = typer.Option(1, "--schedulers", help="Scheduler daemons (--local)."),
        policy: str = typer.Option("block", help="Routing policy (block, block-po2, round-robin, ...)."),
        k: int | None = typer.Option(None, "--k", help="Instances sampled per request (block-pok)."),
        profile: str = typer.Option(DEFAULT_PROFILE, help="Step-time profile of the emulated instances."),
        base_port: int = typer.Option(8000, help="Schedulers from here; emulators +100, agents +200."),
        tagger: str | None = typer.Option(None, help="Length tagger directory for the schedulers."),
        predict_timeout_ms: float | None = typer.Option(None, help="Schedulers' /predict deadline (ms)."),
        api_key_file: Path | None = typer.Option(None, help="File of API keys clients must send."),
        host: str = typer.Option("127.0.0.1", help="Address the schedulers listen on."),
        request_log: Path | None = typer.Option(
            None, help="Schedulers' request log, -PORT added per daemon (default: STATE/logs/requests.jsonl)."),
        no_request_log: bool = typer.Option(False, "--no-request-log", help="Schedulers write no request log."),
        request_log_max_mb: float | None = typer.Option(None, help="Rotate each request log past this size."),
        request_log_backups: int | None = typer.Option(None, help="Rotated request-log files kept."),
        log_prompts: bool = typer.Option(False, "--log-prompts", help="Prompt text in the request log."),
        max_num_seqs: int | None = typer.Option(None, help="Engine flag, as vLLM's."),
        max_num_batched_tokens: int | None = typer.Option(None, help="Engine flag, as vLLM's."),
        num_gpu_blocks_override: int | None = typer.Option(None, help="Engine flag, as vLLM's."),
        block_size: int | None = typer.Option(None, help="Engine flag, as vLLM's."),
        max_model_len: int | None = typer.Option(None, help="Engine flag, as vLLM's."),
        seed: int = typer.Option(0, help="Seed of the emulators (instance i uses seed + i)."),
        reply_lengths: Path | None = typer.Option(
            None, help="The emulators reply to the workload's prompts with its own lengths (a table from "
            "`blockctl bench reply-lengths`); the schedulers never see it."),
        timeout: float = typer.Option(90.0, help="Seconds to wait for every process to be healthy."),
        state_dir: Path | None = typer.Option(None, help=STATE_DIR_HELP),
    ) -> None:
        """Start (or converge) a cluster: instances with their agents, then the scheduler daemons."""
        sd = resolve_state_dir(state_dir)
        if local_ == (spec_file is not None):
            raise ConfigError("give exactly one of --local or -c FILE", key="up",
                              hint="blockctl up --local --instances 2")
        if spec_file is not None:
            _print_up(_up_ssh(spec_file, sd))
            return
        flags = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                 "num_gpu_blocks_override": num_gpu_blocks_override, "block_size": block_size,
                 "max_model_len": max_model_len}
        spec = local.LocalSpec(
            instances=instances, schedulers=schedulers, policy=policy, profile=profile, base_port=base_port,
            engine_flags={key: v for key, v in flags.items() if v is not None}, k=k, tagger=tagger,
            predict_timeout_ms=predict_timeout_ms, api_key_file=str(api_key_file) if api_key_file else None,
            scheduler_host=host, seed=seed, request_log=str(request_log) if request_log else None,
            request_log_enabled=not no_request_log, request_log_max_mb=request_log_max_mb,
            request_log_backups=request_log_backups, log_prompts=log_prompts,
            reply_lengths=_reply_table(reply_lengths),
        )
        with console.status("bringing the local cluster up"):
            state = local.up(spec, sd, timeout_s=timeout, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
        _print_up(state)

    @app.command("down")
    @handle_errors
    def down(state_dir: Path | None = typer.Option(None, help=STATE_DIR_HELP)) -> None:
        """Stop exactly the processes `blockctl up` started (by recorded PID), then forget the cluster."""
        sd = resolve_state_dir(state_dir)
        state = load_state(sd)
        if state is None:
            ok(f"no cluster recorded in {sd}; nothing to stop")
            return
        if state.kind == "ssh":
            from blockctl.cluster.ssh.lifecycle import down as ssh_down

            unreached: set[str] = set()
            for outcome in asyncio.run(ssh_down(sd)):
                if outcome.ok:
                    ok(f"{outcome.host}: stopped")
                elif outcome.error is not None:
                    unreached.add(outcome.host)
                    fail(outcome.error.message, f"less {outcome.log_path}" if outcome.log_path else None)
            if unreached:  # keep what still runs there on record, so a later `down` can stop it
                stopped = local.down(sd)
                left = tuple(i for i in state.instances if i.host in unreached)
                save_state(sd, dataclasses.replace(state, instances=left, schedulers=()))
                raise ClusterError(f"stopped {len(stopped)} local process(es); {len(left)} instance(s) on "
                                   f"{', '.join(sorted(unreached))} still recorded", hint="blockctl down")
        stopped = local.down(sd)
        ok(f"stopped {len(stopped)} local process(es); cluster state removed from {sd}")

    @app.command("status")
    @handle_errors
    def status(
        json_: bool = typer.Option(False, "--json", help="Machine-readable output."),
        state_dir: Path | None = typer.Option(None, help=STATE_DIR_HELP),
    ) -> None:
        """Every instance's health, load, KV use and recent prediction error; every scheduler's endpoint."""
        sd = resolve_state_dir(state_dir)
        state = load_state(sd)
        if state is None:
            raise ClusterError(f"no cluster recorded in {sd}", hint="blockctl up --local")
        result = asyncio.run(gather_status(sd, state))
        bad = [i.name for i in result.instances if not i.healthy] + [s.url for s in result.schedulers
                                                                     if not s.healthy]
        if json_:
            print_json(result.to_json())
        else:
            _status_table(result)
        if bad:  # exit 1 either way, so scripts can rely on it
            fail(f"not healthy: {', '.join(bad)}", "blockctl up --local (converges: restarts what is down)")
            raise typer.Exit(1)


def _reply_table(path: Path | None) -> str | None:
    """The table's absolute path, checked now so that ``up`` fails before it starts anything."""
    if path is None:
        return None
    from blockctl import replytable

    replytable.load(path)
    return str(path.expanduser().resolve())
