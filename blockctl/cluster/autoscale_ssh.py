"""Resizing an SSH cluster by whole hosts: spec hosts not running (``standby`` ones) join; hosts leave drained.

A host joins through the remote-cluster stages (``ssh.lifecycle.add_host``: probe, install, engines, agents);
a leaving host's instances are first marked draining in cluster.json (schedulers stop sending), then it is
stopped (``remove_host``) once every one of its agents reports nothing in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from blockctl.cluster.autoscale_local import SETTLE_S
from blockctl.cluster.spec import ClusterSpec, HostSpec
from blockctl.cluster.state import ClusterState, InstanceState, load_state, read_token, save_state
from blockctl.errors import ClusterError, StateError

Say = Callable[[str], None]


def host_size(host: HostSpec) -> int:
    """Instances a host is expected to bring (GPUs listed, else its ``instances``; 'all' GPUs count as that)."""
    return len(host.gpus) if isinstance(host.gpus, list) and host.gpus else host.instances


def plan_hosts(spec: ClusterSpec, state: ClusterState, target: int) -> tuple[list[str], list[str]]:
    """Pure: (hosts to add, hosts to remove) to bring the serving instance count near ``target``.

    Adds spec hosts that run nothing (standby ones first, in spec order) until the target is reached or none
    is left; removes whole hosts (standby ones first, then from the end of the spec) while what stays still
    reaches the target, never the last host.
    """
    serving = Counter(i.host for i in state.instances if i.status == "serving")
    running = {i.host for i in state.instances}
    current = sum(serving.values())
    add: list[str] = []
    if target > current:
        idle = sorted((h for h in spec.hosts if h.label not in running), key=lambda h: not h.standby)
        for host in idle:
            if current >= target:
                break
            add.append(host.label)
            current += host_size(host)
        return add, []
    remove: list[str] = []
    order = sorted((h for h in reversed(spec.hosts) if serving.get(h.label)), key=lambda h: not h.standby)
    for host in order:
        n = serving[host.label]
        if current - n >= target and len(serving) - len(remove) > 1:
            remove.append(host.label)
            current -= n
    return [], remove


async def _outstanding(http: httpx.AsyncClient, inst: InstanceState) -> int | None:
    try:
        resp = await http.get(f"{inst.agent_url}/load")
        return int(resp.json()["outstanding"]) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


async def _wait_idle(state: ClusterState, label: str, token: str | None, timeout_s: float) -> None:
    insts = [i for i in state.instances if i.host == label]
    deadline = time.monotonic() + timeout_s
    await asyncio.sleep(SETTLE_S)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    while True:
        async with httpx.AsyncClient(timeout=2.0, headers=headers) as http:
            counts = await asyncio.gather(*(_outstanding(http, i) for i in insts))
        busy = [i.name for i, n in zip(insts, counts, strict=True) if n not in (0, None)]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"{label}: still busy after {timeout_s:g} s ({', '.join(busy)}); left draining",
                               hint="blockctl scale --instances N (again, later)")
        await asyncio.sleep(0.5)


async def scale_ssh(state_dir: Path, target: int, *, timeout_s: float = 600.0,
                    say: Say | None = None) -> tuple[list[str], list[str]]:
    """Bring an SSH cluster to about ``target`` serving instances; returns (hosts added, hosts removed)."""
    from blockctl.cluster.ssh.lifecycle import add_host, remove_host, spec_of

    tell = say or (lambda _m: None)
    state = load_state(state_dir)
    if state is None or state.kind != "ssh":
        raise StateError("no SSH cluster is up here", hint="blockctl up -c cluster.yaml")
    add, remove = plan_hosts(spec_of(state), state, target)
    if target > len(state.serving()) and not add:
        raise ClusterError("no spec host is left to add", hint="add a host with `standby: true` to the spec")
    for label in add:
        tell(f"adding {label}")
        outcome = await add_host(state_dir, label)
        if outcome.error is not None:
            raise outcome.error
    token = read_token(state_dir)
    for label in remove:
        tell(f"draining {label}")
        current = load_state(state_dir) or state
        now = time.time()
        current = current.with_instances(tuple(
            dataclasses.replace(i, status="draining", settings={**i.settings, "draining_since": now})
            if i.host == label else i for i in current.instances))
        save_state(state_dir, current)
        await _wait_idle(current, label, token, timeout_s)
        outcome = await remove_host(state_dir, label)
        if outcome.error is not None:
            raise outcome.error
    return add, remove
