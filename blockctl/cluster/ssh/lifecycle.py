"""Cluster-level SSH operations behind the CLI: up (then cluster.json), down, and remote log tails.

cluster.json (kind "ssh") keeps the validated spec in ``settings["spec"]`` so `down` and `logs` can reach the
hosts without the YAML file; each instance's ``settings`` hold its index, run root and ports on its host.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from blockctl.cluster.spec import ClusterSpec, HostSpec
from blockctl.cluster.ssh import processes, remote
from blockctl.cluster.ssh.bootstrap import HostOutcome, bring_up, bring_up_host
from blockctl.cluster.ssh.connection import connect
from blockctl.cluster.ssh.hostlog import HostLog, host_log_path
from blockctl.cluster.ssh.install import build_wheel
from blockctl.cluster.ssh.plan import RemotePaths, port_needle
from blockctl.cluster.state import (
    ClusterState,
    InstanceState,
    ensure_token,
    load_state,
    logs_dir,
    save_state,
)
from blockctl.errors import ClusterError, HostError, StateError

q = shlex.quote


def spec_of(state: ClusterState) -> ClusterSpec:
    """The spec an SSH cluster was brought up with (stored in cluster.json)."""
    try:
        return ClusterSpec.model_validate(state.settings["spec"])
    except (KeyError, ValidationError) as exc:
        raise StateError(
            f"cluster.json has no usable spec ({type(exc).__name__})", hint="blockctl up -c FILE"
        ) from None


def scheduler_settings(spec: ClusterSpec) -> dict[str, object]:
    """What the local scheduler daemons need from the spec (for the code that starts them)."""
    s = spec.scheduler
    return {
        "daemons": s.daemons,
        "host": s.host,
        "port": s.port,
        "policy": s.policy,
        "policy_params": dict(s.policy_params),
        "tagger": s.tagger,
        "api_key_file": s.api_key_file,
        "slo": spec.slo.model_dump(mode="json"),
    }


async def up(spec: ClusterSpec, *, spec_file: str, state_dir: Path) -> tuple[ClusterState, list[HostOutcome]]:
    """Bring all hosts up, stop hosts that left the spec, write cluster.json; healthy hosts serve anyway."""
    old = load_state(state_dir)
    if old is not None and old.kind != "ssh" and old.instances:
        raise ClusterError("a local cluster is up in this state dir", hint="blockctl down")
    token = ensure_token(state_dir)
    outcomes = await bring_up(spec, token=token, logs_dir=logs_dir(state_dir), work_dir=state_dir / "wheels")
    if old is not None and old.kind == "ssh":
        wanted = {h.label for h in spec.hosts if not h.standby}
        gone = [i for i in old.instances if i.host not in wanted]
        if gone:
            await down_instances(spec_of(old), gone, state_dir=state_dir)
    instances = tuple(i for o in outcomes for i in o.instances)
    state = ClusterState(
        kind="ssh",
        policy=spec.scheduler.policy,
        instances=instances,
        schedulers=old.schedulers if old is not None else (),
        settings={
            "spec_file": spec_file,
            "spec": spec.model_dump(mode="json"),
            "scheduler": scheduler_settings(spec),
        },
    )
    save_state(state_dir, state)
    return state, outcomes


async def _down_host(
    spec: ClusterSpec, host: HostSpec, instances: list[InstanceState], state_dir: Path
) -> HostOutcome:
    log = HostLog(host_log_path(logs_dir(state_dir), host.label), host.label)
    outcome = HostOutcome(host=host.label, log_path=log.path)
    log.write(f"=== blockctl down: {host.label}")
    try:
        with log.stage("connect"):
            conn = await connect(host, spec.ssh, log)
        try:
            with log.stage("stop"):
                for inst in instances:
                    for role in ("agent", "engine"):
                        pid, port = inst.pids.get(role), inst.settings.get(f"{role}_port")
                        if pid is not None and port is not None:
                            stopped = await processes.stop_recorded(conn, pid, port_needle(int(port)))
                            outcome.notes.append(
                                f"{inst.name}: {role} pid {pid} {'stopped' if stopped else 'gone'}"
                            )
                roots = {str(i.settings["root"]) for i in instances if "root" in i.settings}
                for root in sorted(roots):
                    await processes.stop_all(conn, RemotePaths(root=root, venv=f"{root}/venv"))
        finally:
            await conn.close()
    except HostError as exc:
        outcome.error = exc
    return outcome


async def down_instances(
    spec: ClusterSpec, instances: list[InstanceState] | tuple[InstanceState, ...], *, state_dir: Path
) -> list[HostOutcome]:
    """Stop the recorded engines and agents of ``instances`` on their hosts, every host at once."""
    by_host: dict[str, list[InstanceState]] = {}
    for inst in instances:
        by_host.setdefault(inst.host, []).append(inst)
    known = {h.label: h for h in spec.hosts}
    outcomes = await asyncio.gather(
        *(_down_host(spec, known[h], insts, state_dir) for h, insts in by_host.items() if h in known)
    )
    return list(outcomes)


async def down(state_dir: Path) -> list[HostOutcome]:
    """Stop every remote process cluster.json records; cluster.json itself is left to the caller."""
    state = load_state(state_dir)
    if state is None or state.kind != "ssh":
        return []
    return await down_instances(spec_of(state), state.instances, state_dir=state_dir)


async def add_host(state_dir: Path, label: str) -> HostOutcome:
    """Bring one spec host (typically a ``standby`` one) up and add its instances to cluster.json.

    For the autoscaler: the stages are the same as `up`'s; on failure cluster.json is left as it was.
    """
    state = _ssh_state(state_dir)
    spec = spec_of(state)
    host = spec.host(label)
    wheel = None
    if spec.install.mode == "wheel":
        wheel = await build_wheel(spec.install, state_dir / "wheels")
    token = ensure_token(state_dir)
    outcome = await bring_up_host(spec, host, token=token, wheel=wheel, logs_dir=logs_dir(state_dir))
    if outcome.ok:
        current = _ssh_state(state_dir)  # re-read: another process may have changed it meanwhile
        kept = tuple(i for i in current.instances if i.host != label)
        save_state(state_dir, current.with_instances(kept + tuple(outcome.instances)))
    return outcome


async def remove_host(state_dir: Path, label: str) -> HostOutcome:
    """Stop one host's engines and agents and drop them from cluster.json (drain it first to lose nothing)."""
    state = _ssh_state(state_dir)
    insts = [i for i in state.instances if i.host == label]
    if not insts:
        raise ClusterError(f"{label} runs no instance of this cluster", hint="blockctl status")
    (outcome,) = await down_instances(spec_of(state), insts, state_dir=state_dir)
    if outcome.ok:
        current = _ssh_state(state_dir)
        save_state(state_dir, current.with_instances(tuple(i for i in current.instances if i.host != label)))
    return outcome


def _ssh_state(state_dir: Path) -> ClusterState:
    state = load_state(state_dir)
    if state is None or state.kind != "ssh":
        raise StateError("no SSH cluster is up here", hint="blockctl up -c cluster.yaml")
    return state


async def remote_logs(
    state_dir: Path,
    host: str,
    role: Literal["engine", "agent"],
    *,
    lines: int,
    follow: bool,
    write: Callable[[str], None],
) -> None:
    """Tail ``role``'s logs of every instance on ``host`` (``-F`` streams until cancelled)."""
    state = _ssh_state(state_dir)
    spec = spec_of(state)
    host_spec = spec.host(host)
    insts = [i for i in state.instances if i.host == host]
    if not insts:
        raise ClusterError(f"{host} runs no instance (it failed at `up`)", hint=f"blockctl logs {host}")
    files = [f"{i.settings['root']}/logs/{role}-{i.settings['index']}.log" for i in insts]
    log = HostLog(host_log_path(logs_dir(state_dir), host), host)
    conn = await connect(host_spec, spec.ssh, log)
    try:
        if not follow:
            for path in files:
                write(f"==> {host}:{path} <==")
                write((await conn.run(remote.tail(path, lines), check=False, what=f"tail {path}")).stdout)
            return
        command = f"tail -n {lines} -F {' '.join(map(q, files))}"
        async with conn.conn.create_process(command) as proc:
            async for line in proc.stdout:
                write(str(line).rstrip("\n"))
    finally:
        await conn.close()
