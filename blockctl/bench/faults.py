"""``blockctl bench faults``: a local cluster under load while faults are injected, one after the other.

Scenarios (each on its own instance or scheduler, the load running throughout):
- ``reset``: connections between the schedulers and one agent are reset (RST) several times;
- ``kill-engine``, ``kill-agent``, ``kill-scheduler``: kill -9, then ``up`` brings the cluster back;
- ``stop-engine``, ``stop-agent``: SIGSTOP for ``stop_s`` seconds, then SIGCONT.

Reported: requests sent and how each ended (``faultload.OUTCOMES``, attributed to the scenario in which they
ended), per scenario and in total; runs counted by the engines themselves: runs beyond the replies
delivered (each is a request run twice, or run once for a client whose reply was then lost in the fault),
and the duplicates that count proves (runs beyond replies − requests that failed); and for a sick instance
the time until every scheduler stopped routing to it and until it was back. Loopback only, bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from blockctl.bench.faultload import OUTCOMES, Load
from blockctl.bench.faultwatch import ResetRelay, Watch
from blockctl.cluster import local
from blockctl.cluster.state import load_state, save_state
from blockctl.errors import ConfigError
from blockctl.scheduler.policies import make_policy

SCENARIOS = ("reset", "kill-engine", "kill-agent", "kill-scheduler", "stop-engine", "stop-agent")
TARGETS = {"duplicates_at_least": 0, "hung": 0, "cut_silently": 0, "failed_before_token": 0, "out_of_rotation_s": 2.0}


@dataclass(frozen=True, slots=True)
class FaultOptions:
    scenarios: tuple[str, ...] = SCENARIOS
    instances: int = 3
    schedulers: int = 2
    policy: str = "least-outstanding"  # spreads the load, so every faulty instance has requests in flight
    concurrency: int = 8
    max_tokens: int = 24
    base_port: int = 19000
    observe_s: float = 4.0  # how long a fault is left in place (SIGSTOP, or dead before `up`)
    settle_s: float = 2.0  # load after recovery, before the next fault
    hang_s: float = 45.0  # a request not over after this long is hung
    resets: int = 4
    drill_requests: int = 3  # single non-streamed requests reset mid-run on a quiet cluster

    def validate(self) -> None:
        make_policy(self.policy)
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ConfigError(f"unknown scenario(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(SCENARIOS)}",
                              key="scenarios")
        if self.instances < 3 or self.schedulers < 2:
            raise ConfigError("needs at least 3 instances and 2 schedulers (faults must leave survivors)",
                              key="instances")
        for key, value in (("concurrency", self.concurrency), ("max-tokens", self.max_tokens)):
            if value < 1:
                raise ConfigError(f"must be at least 1, got {value}", key=key)


@dataclass
class _Ctx:
    opts: FaultOptions
    spec: local.LocalSpec
    state_dir: Path
    watch: Watch
    sched_urls: list[str]
    load: Load

    def instance(self, index: int) -> Any:
        state = load_state(self.state_dir)
        assert state is not None
        return state.instances[index % len(state.instances)]

    async def up(self) -> None:
        await self.watch.scrape_engines()  # `up` may restart an engine: bank its count first
        await asyncio.to_thread(local.up, self.spec, self.state_dir)


async def _kill(ctx: _Ctx, pid: int, sig: int) -> None:
    if sig == signal.SIGKILL:
        await ctx.watch.scrape_engines()
    os.kill(pid, sig)


async def _kill_engine(ctx: _Ctx) -> dict[str, Any]:
    inst = ctx.instance(0)
    return await _dead_then_up(ctx, inst.name, inst.pids["engine"])


async def _kill_agent(ctx: _Ctx) -> dict[str, Any]:
    inst = ctx.instance(1)
    return await _dead_then_up(ctx, inst.name, inst.pids["agent"])


async def _dead_then_up(ctx: _Ctx, name: str, pid: int) -> dict[str, Any]:
    t0 = time.monotonic()
    await _kill(ctx, pid, signal.SIGKILL)
    await asyncio.sleep(ctx.opts.observe_s)
    t1 = time.monotonic()
    await ctx.up()
    await asyncio.sleep(0.5)
    return {"target": name, "out_s": ctx.watch.first_out(name, t0), "back_s": None, "t_back": t1}


async def _kill_scheduler(ctx: _Ctx) -> dict[str, Any]:
    state = load_state(ctx.state_dir)
    assert state is not None and state.schedulers[0].pid is not None
    await _kill(ctx, state.schedulers[0].pid, signal.SIGKILL)
    await asyncio.sleep(ctx.opts.observe_s)
    await ctx.up()
    return {"target": state.schedulers[0].url, "out_s": None, "back_s": None}


async def _stop(ctx: _Ctx, index: int, which: str) -> dict[str, Any]:
    inst = ctx.instance(index)
    pid = inst.pids[which]
    t0 = time.monotonic()
    await _kill(ctx, pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(ctx.opts.observe_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    t1 = time.monotonic()
    await asyncio.sleep(0.5)
    return {"target": inst.name, "out_s": ctx.watch.first_out(inst.name, t0), "back_s": None, "t_back": t1}


async def _stop_engine(ctx: _Ctx) -> dict[str, Any]:
    return await _stop(ctx, 2, "engine")


async def _stop_agent(ctx: _Ctx) -> dict[str, Any]:
    return await _stop(ctx, 0, "agent")


async def _reset(ctx: _Ctx) -> dict[str, Any]:
    """Route the schedulers to one agent through a relay, then reset every connection through it."""
    state = load_state(ctx.state_dir)
    assert state is not None
    inst = state.instances[1]
    agent_port = int(inst.settings["agent_port"])
    relay = ResetRelay(ctx.opts.base_port + 90, agent_port)
    await relay.start()
    relayed = dataclasses.replace(inst, agent_url=f"http://127.0.0.1:{relay.port}")
    save_state(ctx.state_dir, dataclasses.replace(
        state, instances=tuple(relayed if i.name == inst.name else i for i in state.instances)))
    try:
        for _ in range(50):  # the schedulers pick up the new address (they poll cluster.json)
            if relay.accepted >= ctx.opts.schedulers:
                break
            await asyncio.sleep(0.1)
        cut = 0
        for _ in range(ctx.opts.resets):
            await asyncio.sleep(ctx.opts.observe_s / ctx.opts.resets)
            cut += relay.reset()
        drill = await _single_request_drill(ctx, relay, inst.name)
    finally:
        now = load_state(ctx.state_dir)
        if now is not None:
            save_state(ctx.state_dir, dataclasses.replace(
                now, instances=tuple(inst if i.name == inst.name else i for i in now.instances)))
        await asyncio.sleep(0.5)
        await relay.stop()
    return {"target": inst.name, "out_s": None, "back_s": None, "connections_reset": cut, "drill": drill}


async def _single_request_drill(ctx: _Ctx, relay: ResetRelay, name: str) -> dict[str, Any]:
    """The issue's reproduction, exactly: on a quiet cluster whose only serving instance is behind the
    relay, send one non-streamed request at a time, reset the connections while it runs, and count how
    many times the engines ran it to the end (their own counters, before and after)."""
    await ctx.load.pause()
    state = load_state(ctx.state_dir)
    assert state is not None
    only = dataclasses.replace(state, instances=tuple(
        i if i.name == name else dataclasses.replace(i, status="draining") for i in state.instances))
    save_state(ctx.state_dir, only)
    runs: list[int] = []
    statuses: list[int] = []
    try:
        await asyncio.sleep(0.5)  # the schedulers reload cluster.json
        body = {"model": "emulated", "prompt": "Fault drill: one request.", "max_tokens": 200,
                "ignore_eos": True}
        for n in range(ctx.opts.drill_requests):
            if not await ctx.watch.quiet():
                break
            await ctx.watch.scrape_engines()
            before = ctx.watch.runs()
            send = asyncio.ensure_future(ctx.watch.http.post(f"{ctx.sched_urls[n % len(ctx.sched_urls)]}"
                                                             "/v1/completions", json=body, timeout=60.0))
            await asyncio.sleep(0.4)  # it is running on the engine now
            relay.reset()
            try:
                statuses.append((await send).status_code)
            except httpx.HTTPError:
                statuses.append(0)
            await ctx.watch.quiet()
            await ctx.watch.scrape_engines()
            runs.append(round(ctx.watch.runs() - before))
    finally:
        save_state(ctx.state_dir, state)
        await asyncio.sleep(0.5)
        ctx.load.go.set()
    return {"requests": len(runs), "statuses": statuses, "engine_runs": runs,
            "executed_more_than_once": sum(1 for r in runs if r > 1)}


RUN: dict[str, Callable[[_Ctx], Awaitable[dict[str, Any]]]] = {
    "reset": _reset, "kill-engine": _kill_engine, "kill-agent": _kill_agent,
    "kill-scheduler": _kill_scheduler, "stop-engine": _stop_engine, "stop-agent": _stop_agent,
}


def _counts(outcomes: list[Any], start: float, end: float) -> dict[str, Any]:
    picked = [o for o in outcomes if start <= o.at < end]
    counts = {k: 0 for k in OUTCOMES}
    served: dict[str, int] = {}
    for o in picked:
        counts[o.kind] += 1
        if o.instance:
            served[o.instance] = served.get(o.instance, 0) + 1
    longest = max((o.seconds for o in picked), default=0.0)
    return {"sent": len(picked), **counts, "longest_s": round(longest, 2), "answered_by": dict(sorted(served.items()))}


async def _drive(ctx: _Ctx) -> dict[str, Any]:
    opts, load = ctx.opts, ctx.load
    stop_watch = asyncio.Event()
    watch_task = asyncio.create_task(ctx.watch.run(ctx.sched_urls, stop_watch))
    load_task = asyncio.create_task(load.run())
    t_start = time.monotonic()
    await asyncio.sleep(opts.settle_s)
    phases: list[dict[str, Any]] = []
    try:
        for name in opts.scenarios:
            begin = time.monotonic()
            row = await RUN[name](ctx)
            await asyncio.sleep(opts.settle_s)
            row.update(scenario=name, begin=begin, end=time.monotonic())
            phases.append(row)
    finally:
        load.stop.set()
        stats = await load_task
        await ctx.watch.scrape_engines()
        stop_watch.set()
        await watch_task
    for row in phases:  # back in rotation after SIGCONT: known only once the timeline has run on
        t_back = row.pop("t_back", None)
        if t_back is not None:
            row["back_s"] = ctx.watch.first_back(row["target"], t_back) if row["out_s"] is not None else None
    ends = [p["begin"] for p in phases[1:]] + [float("inf")]
    for row, end in zip(phases, ends, strict=True):
        row["requests"] = _counts(stats.outcomes, row.pop("begin"), end)
        row.pop("end")
    total = _counts(stats.outcomes, t_start - 1, float("inf"))
    drill = next((p.get("drill") for p in phases if p.get("drill")), None)
    executed = round(ctx.watch.runs()) - (sum(drill["engine_runs"]) if drill else 0)  # the load's runs
    failures: dict[str, int] = {}
    for o in stats.outcomes:
        if o.kind != "completed":
            key = f"{o.kind}: {o.detail}"[:140]
            failures[key] = failures.get(key, 0) + 1
    # Every delivered reply is one engine run; the runs beyond them ran for a request that then failed (its
    # reply lost in the fault: at most one per failed request) or ran twice. More extra runs than failed
    # requests proves duplicates; fewer proves nothing either way (hence both figures).
    extra = executed - total["completed"]
    failed = total["sent"] - total["completed"]
    return {"phases": phases, "total": total, "engine_executions": executed, "runs_beyond_replies": extra,
            "duplicates_at_least": max(0, extra - failed), "drill": drill, "redirected": stats.redirected,
            "failure_details": dict(sorted(failures.items(), key=lambda kv: -kv[1])[:12]),
            "wall_s": round(time.monotonic() - t_start, 1)}


def run_faults(opts: FaultOptions, *, logs: Path | None = None) -> dict[str, Any]:
    """Bring up a local cluster, run the load with the faults, bring it down; returns the report.

    With ``logs``, the cluster's state dir (and so its processes' logs) is that directory and is kept."""
    opts.validate()
    with tempfile.TemporaryDirectory(prefix="blockctl-faults-") as tmp:
        state_dir = Path(tmp) if logs is None else logs
        spec = local.LocalSpec(instances=opts.instances, schedulers=opts.schedulers, base_port=opts.base_port,
                               policy=opts.policy, request_log_enabled=False)
        with local.local_cluster(spec, state_dir) as state:

            async def main() -> dict[str, Any]:
                async with httpx.AsyncClient() as http:
                    urls = [s.url for s in state.schedulers]
                    load = Load(urls, concurrency=opts.concurrency, max_tokens=opts.max_tokens, hang_s=opts.hang_s)
                    return await _drive(_Ctx(opts, spec, state_dir, Watch(state_dir, http), urls, load))

            report = asyncio.run(main())
    report.update(options=dataclasses.asdict(opts), targets=TARGETS, load_avg_1m=round(os.getloadavg()[0], 2),
                  machine_cpus=len(os.sched_getaffinity(0)))
    return report
