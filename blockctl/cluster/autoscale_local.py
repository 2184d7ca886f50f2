"""Resizing the local cluster without blocking: launch, promote when healthy, drain, stop when idle.

Every step reads cluster.json, changes it and writes it back at once, so the controller and ``blockctl
scale`` can interleave. Life of an added instance in cluster.json::

    launch    status "draining", settings.starting = launch time   (schedulers do not route to it yet;
                                                                     `blockctl down` stops it like any other)
    promote   status "serving", settings.startup_s = measured start-to-healthy seconds
    drain     status "draining", settings.draining_since = time     (schedulers stop sending at once)
    reap      processes stopped and the entry removed, once its agent reports nothing in flight
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from blockctl.cluster import procs
from blockctl.cluster.local_plan import AGENT_MODULE, EMULATOR_MODULE, MAX_EACH, InstancePlan, argv_for
from blockctl.cluster.state import ClusterState, InstanceState, load_state, logs_dir, read_token, save_state
from blockctl.errors import ClusterError, StateError

SETTLE_S = 1.0  # a drained instance is stopped no sooner: schedulers reload cluster.json every 0.25 s


def local_state(state_dir: Path) -> ClusterState:
    state = load_state(state_dir)
    if state is None or state.kind != "local":
        raise StateError(f"no local cluster is recorded in {state_dir}", hint="blockctl up --local")
    if not state.instances:
        raise StateError(f"{state_dir}: the cluster has no instance to copy settings from",
                         hint="blockctl up --local")
    return state


def starting(inst: InstanceState) -> bool:
    return inst.status == "draining" and "starting" in inst.settings


def draining(inst: InstanceState) -> bool:
    return inst.status == "draining" and "starting" not in inst.settings


def _markers(inst: InstanceState) -> list[tuple[int | None, procs.Marker]]:
    s = inst.settings
    return [(inst.pids.get("agent"), (AGENT_MODULE, int(s.get("agent_port", 0)))),
            (inst.pids.get("engine"), (EMULATOR_MODULE, int(s.get("engine_port", 0))))]


def _replace(state: ClusterState, changed: dict[str, InstanceState | None]) -> ClusterState:
    """``state`` with instances replaced by name (None removes one)."""
    out = [changed.get(i.name, i) for i in state.instances]
    return state.with_instances(tuple(i for i in out if i is not None))


def next_plans(state: ClusterState, count: int, *, startup_delay_s: float = 0.0,
               skip: frozenset[int] = frozenset()) -> list[InstancePlan]:
    """Pure: ``count`` new instances at the lowest free indexes (not in ``skip``), settings copied from the
    first instance."""
    template = state.instances[0].settings
    base = int(state.settings.get("base_port", int(template["engine_port"]) - 100 - int(template["index"])))
    used = {int(i.settings.get("index", -1)) for i in state.instances} | set(skip)
    plans: list[InstancePlan] = []
    index = 0
    while len(plans) < count:
        while index in used:
            index += 1
        if index >= MAX_EACH:
            raise ClusterError(f"no free port pair left (at most {MAX_EACH} local instances)")
        settings: dict[str, Any] = {
            **template, "index": index, "engine_port": base + 100 + index, "agent_port": base + 200 + index,
            "seed": int(template["seed"]) - int(template["index"]) + index,
        }
        settings.pop("startup_delay", None)
        if startup_delay_s > 0:
            settings["startup_delay"] = startup_delay_s
        plans.append(InstancePlan(f"i{index}", base + 100 + index, base + 200 + index, settings))
        used.add(index)
    return plans


def launch(state_dir: Path, count: int, *, startup_delay_s: float = 0.0) -> list[str]:
    """Start ``count`` emulated instances; they are recorded as starting (see module docstring)."""
    state = local_state(state_dir)
    busy: set[int] = set()  # indexes whose ports another program holds: skipped, not fatal
    while True:
        plans = next_plans(state, count, startup_delay_s=startup_delay_s, skip=frozenset(busy))
        taken = {int(p.settings["index"]) for p in plans
                 if not (procs.port_free(p.engine_port) and procs.port_free(p.agent_port))}
        if not taken:
            break
        busy |= taken
    added = []
    now = time.time()
    for plan in plans:
        engine_argv, agent_argv = argv_for(plan, state_dir)
        if startup_delay_s > 0:
            engine_argv += ["--startup-delay", f"{startup_delay_s:g}"]
        engine_pid = procs.spawn(engine_argv, logs_dir(state_dir) / f"{plan.name}-engine.log")
        agent_pid = procs.spawn(agent_argv, logs_dir(state_dir) / f"{plan.name}-agent.log")
        added.append(InstanceState(
            name=plan.name, host="127.0.0.1", agent_url=plan.agent_url, engine_url=plan.engine_url,
            profile=str(plan.settings["profile"]), pids={"engine": engine_pid, "agent": agent_pid},
            status="draining", settings={**plan.settings, "starting": now},
        ))
    current = load_state(state_dir) or state
    save_state(state_dir, current.with_instances((*current.instances, *added)))
    return [i.name for i in added]


def _get(http: httpx.Client, url: str) -> httpx.Response | None:
    try:
        return http.get(url)
    except httpx.HTTPError:
        return None


def promote_ready(state_dir: Path, *, timeout_s: float = 300.0) -> tuple[list[str], list[str]]:
    """Starting instances that answer /health become serving; ones that died or outlived ``timeout_s`` are
    stopped and removed. Returns (promoted, failed)."""
    state = local_state(state_dir)
    changed: dict[str, InstanceState | None] = {}
    failed: list[str] = []
    now = time.time()
    with httpx.Client(timeout=2.0) as http:
        for inst in (i for i in state.instances if starting(i)):
            age = now - float(inst.settings["starting"])
            alive = all(procs.is_ours(pid, m) for pid, m in _markers(inst))
            resp = _get(http, f"{inst.agent_url}/health") if alive else None
            if resp is not None and resp.status_code == 200:
                settings = {k: v for k, v in inst.settings.items() if k != "starting"}
                settings["startup_s"] = round(age, 3)
                changed[inst.name] = dataclasses.replace(inst, status="serving", settings=settings)
            elif not alive or age > timeout_s:
                procs.stop(_markers(inst))
                changed[inst.name] = None
                failed.append(inst.name)
    if changed:
        save_state(state_dir, _replace(load_state(state_dir) or state, changed))
    return [n for n, v in changed.items() if v is not None], failed


def outstanding(http: httpx.Client, inst: InstanceState, token: str | None) -> int | None:
    """Requests the instance's agent has in flight (None when it does not answer)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        resp = http.get(f"{inst.agent_url}/load", headers=headers)
        return int(resp.json()["outstanding"]) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def drain(state_dir: Path, count: int) -> list[str]:
    """Stop sending to ``count`` instances: starting ones are cancelled first, then the serving ones with
    the fewest requests in flight (highest index on ties). Never drains the last serving instance."""
    state = local_state(state_dir)
    changed: dict[str, InstanceState | None] = {}
    for inst in [i for i in state.instances if starting(i)][::-1][:count]:
        procs.stop(_markers(inst))
        changed[inst.name] = None
    left = count - len(changed)
    serving = list(state.serving())
    left = min(left, len(serving) - 1)
    if left > 0:
        token = read_token(state_dir)
        with httpx.Client(timeout=2.0) as http:
            busy = {i.name: outstanding(http, i, token) for i in serving}
        serving.sort(key=lambda i: (busy[i.name] if busy[i.name] is not None else -1,
                                    -int(i.settings.get("index", 0))))
        now = time.time()
        for inst in serving[:left]:
            changed[inst.name] = dataclasses.replace(inst, status="draining",
                                                     settings={**inst.settings, "draining_since": now})
    if changed:
        save_state(state_dir, _replace(load_state(state_dir) or state, changed))
    return list(changed)


def reap_drained(state_dir: Path) -> list[str]:
    """Stop and forget draining instances whose agent reports nothing in flight (or that no longer run)."""
    state = local_state(state_dir)
    token = read_token(state_dir)
    gone: dict[str, InstanceState | None] = {}
    now = time.time()
    with httpx.Client(timeout=2.0) as http:
        for inst in (i for i in state.instances if draining(i)):
            if now - float(inst.settings.get("draining_since", 0.0)) < SETTLE_S:
                continue
            alive = any(procs.is_ours(pid, m) for pid, m in _markers(inst))
            if not alive or outstanding(http, inst, token) == 0:
                procs.stop(_markers(inst))
                gone[inst.name] = None
    if gone:
        save_state(state_dir, _replace(load_state(state_dir) or state, gone))
    return list(gone)


def scale_to(
    state_dir: Path, target: int, *, startup_delay_s: float = 0.0, timeout_s: float = 300.0,
    poll_s: float = 0.2,
) -> tuple[list[str], list[str]]:
    """Blocking: bring the serving count to ``target`` and wait until new instances serve and drained ones
    are stopped. Returns (added, removed); ClusterError on timeout (what is done stays done)."""
    if target < 1:
        raise ClusterError(f"--instances must be at least 1, got {target}")
    state = local_state(state_dir)
    have = len(state.serving()) + sum(1 for i in state.instances if starting(i))
    added = launch(state_dir, target - have, startup_delay_s=startup_delay_s) if target > have else []
    removed = drain(state_dir, have - target) if target < have else []
    deadline = time.monotonic() + timeout_s
    while True:
        _, failed = promote_ready(state_dir, timeout_s=timeout_s)
        if failed:
            raise ClusterError(f"{', '.join(failed)} did not become healthy; see its logs",
                               hint=f"blockctl logs {failed[0]}")
        reap_drained(state_dir)
        state = local_state(state_dir)
        pending = [i.name for i in state.instances if i.status == "draining"]
        if not pending:
            return added, removed
        if time.monotonic() > deadline:
            raise ClusterError(f"still starting or draining after {timeout_s:g} s: {', '.join(pending)}",
                               hint="blockctl status")
        time.sleep(poll_s)


def names(instances: Sequence[InstanceState]) -> str:
    return ", ".join(i.name for i in instances) or "-"
