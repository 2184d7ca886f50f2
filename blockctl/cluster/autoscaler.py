"""The autoscaling controller: a background process beside the schedulers that observes agents and scales.

Every ``interval_s`` it reads every serving agent's ``/state`` (in-flight requests with predicted lengths and
progress, engine config, requests in the last 60 s), builds an :class:`Observation`, asks the scale policy,
appends the decision to ``autoscaler.jsonl`` in the state dir and, unless advisory, carries it out through
:mod:`blockctl.cluster.autoscale_local` (local) or :mod:`blockctl.cluster.autoscale_ssh` (SSH: whole hosts,
blocking until they serve). Started by ``blockctl scale --auto`` (PID and config in
``autoscaler.json``), stopped by ``blockctl scale --stop`` or ``blockctl down``.

The reactive policy's "observed P99 TTFT" is :func:`blockctl.cluster.scaler.observed_ttft_p99`, as in the
simulator: over the first tokens of the window (the agents report each in-flight request's TTFT and those of
requests that finished in the last minute) and the requests still waiting for one, at their wait so far.
Live it misses non-streamed requests, whose first token the agent cannot see.

An agent whose ``/state`` fails (refused, timed out, not 200, not JSON) is counted and logged, per agent and in
a row, in the controller's log and in each decision line (``state_failures``); its request counter keeps its
history, so the arrival rate neither resets nor jumps when it answers again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from blockctl.cluster import autoscale_local as ops
from blockctl.cluster.projection import Load, Queues, project_ttft
from blockctl.cluster.scaler import (
    AutoscaleConfig,
    Observation,
    ScaleDecision,
    make_scale_policy,
    observed_ttft_p99,
    projections,
)
from blockctl.cluster.state import ClusterState, load_state, logs_dir, read_token
from blockctl.engine.profile import load_profile
from blockctl.engine.types import EngineConfig, Request
from blockctl.predict.tracker import RECENT_WINDOW_S
from blockctl.predict.view import set_progress

MODULE = "blockctl.cluster.autoscaler"
CONFIG_FILE = "autoscaler.json"
DECISIONS_FILE = "autoscaler.jsonl"


def queues_from_state(doc: Mapping[str, Any]) -> Queues:
    """Pure: an agent's ``/state`` requests as the (running, waiting) what-if requests of its own view.

    The agent already translated its in-flight table (``blockctl.predict.view``): each row's ``phase`` and
    ``what_if_output_tokens`` are what its what-ifs run; rows without the latter cannot run there and are
    left out, as the agent's view leaves them out."""
    running: list[Request] = []
    waiting: list[Request] = []
    for r in doc.get("requests", []):
        total = r.get("what_if_output_tokens")
        if total is None:
            continue
        req = Request(str(r["id"]), int(r["prompt_tokens"]), int(total))
        is_running = r.get("phase") == "running"
        set_progress(req, int(r["produced"]), running=is_running)
        (running if is_running else waiting).append(req)
    return running, waiting


def first_tokens(docs: Sequence[Mapping[str, Any]], now: float) -> tuple[list[tuple[float, float]], list[float]]:
    """Pure: from agents' ``/state``, the (first-token time on ``now``'s clock, TTFT) pairs they know (in-flight
    and recently finished requests), and the waits so far of requests without a first token."""
    firsts: list[tuple[float, float]] = []
    waiting: list[float] = []
    for d in docs:
        firsts += [(now - float(ago), float(ttft)) for ago, ttft in d.get("recent_ttfts", [])]
        for r in d.get("requests", []):
            age, ttft = float(r["age_s"]), r.get("ttft_s")
            if ttft is not None:
                firsts.append((now - age + float(ttft), float(ttft)))
            elif int(r.get("produced", 0)) == 0:
                waiting.append(age)
    return firsts, waiting


class Controller:
    """One decision per :meth:`tick`; keeps the rate history and the last actions between ticks."""

    def __init__(self, state_dir: Path, config: AutoscaleConfig, *, advisory: bool = False,
                 startup_delay_s: float = 0.0) -> None:
        self.state_dir = state_dir
        self.config = config
        self.policy = make_scale_policy(config)
        self.advisory = advisory
        self.startup_delay_s = startup_delay_s
        self.rates: deque[tuple[float, float]] = deque()  # (time, req/s over the agents' 60 s window)
        self.last_up: float | None = None
        self.totals: dict[str, deque[tuple[float, int]]] = {}  # per agent: (time, requests ever)
        self.agent_rates: dict[str, tuple[float, float]] = {}  # per agent: (when computed, req/s)
        self.state_failures: dict[str, int] = {}  # per agent: /state failures in a row (0: answered)
        self.state_failures_total = 0
        self.seen: dict[str, float] = {}  # request ids already counted in ``lengths``
        self.lengths: deque[tuple[float, int, int]] = deque()  # (first seen, prompt, predicted output)
        self.last_down: float | None = None

    def _states(self, state: ClusterState) -> list[dict[str, Any]]:
        token = read_token(self.state_dir)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        docs = []
        serving = state.serving()
        with httpx.Client(timeout=2.0, headers=headers) as http:
            for inst in serving:
                try:
                    resp = http.get(f"{inst.agent_url}/state")
                    if resp.status_code != 200:
                        raise ValueError(f"HTTP {resp.status_code}")
                    doc = resp.json()
                    if not isinstance(doc, dict):
                        raise ValueError("not a JSON object")
                except (httpx.HTTPError, ValueError) as exc:
                    self._state_failed(inst.name, exc)
                    continue
                self.state_failures[inst.name] = 0
                docs.append({**doc, "instance": doc.get("instance", inst.name)})
        gone = set(self.state_failures) - {i.name for i in serving}
        for name in gone:  # no longer serving: forget it (its traffic goes elsewhere now)
            self.state_failures.pop(name, None)
            self.totals.pop(name, None)
            self.agent_rates.pop(name, None)
        return docs

    def _state_failed(self, name: str, exc: Exception) -> None:
        self.state_failures[name] = self.state_failures.get(name, 0) + 1
        self.state_failures_total += 1
        print(f"{time.strftime('%H:%M:%S')} agent {name}: /state failed ({type(exc).__name__}: {exc}); "
              f"{self.state_failures[name]} in a row, {self.state_failures_total} in all", flush=True)

    def _rate(self, now: float, docs: Sequence[Mapping[str, Any]]) -> float:
        """Requests/s over the window: per agent, from its request counter (its own 60 s count until its
        history spans half the window; a counter that went back, a restarted agent, restarts only its own
        history). An agent that did not answer this time keeps its last rate for one window."""
        for d in docs:
            name = str(d.get("instance"))
            total = int(d.get("totals", {}).get("requests", 0))
            hist = self.totals.setdefault(name, deque())
            if hist and total < hist[-1][1]:
                hist.clear()
            hist.append((now, total))
            while len(hist) > 1 and hist[1][0] <= now - self.config.window_s:
                hist.popleft()
            t0, n0 = hist[0]
            if now - t0 >= 0.5 * self.config.window_s:
                rate = max(0.0, (total - n0) / (now - t0))
            else:
                rate = int(d.get("recent_requests", 0)) / RECENT_WINDOW_S
            self.agent_rates[name] = (now, rate)
        fresh = {k: v for k, v in self.agent_rates.items() if v[0] >= now - self.config.window_s}
        self.agent_rates = fresh
        return sum(rate for _, rate in fresh.values())

    def observe(self, now: float) -> Observation:
        state = load_state(self.state_dir)
        if state is None:
            return Observation(now=now, ready=0)
        docs = self._states(state)
        starting = [i for i in state.instances if ops.starting(i)]
        rate = self._rate(now, docs)
        self.rates.append((now, rate))
        while self.rates and self.rates[0][0] < now - self.config.window_s:
            self.rates.popleft()
        slope = _slope(self.rates)
        for r in (r for d in docs for r in d.get("requests", [])):
            if r["id"] not in self.seen:  # a new request: its lengths join the recent mix
                self.seen[r["id"]] = now
                self.lengths.append((now, int(r["prompt_tokens"]), int(r["predicted_output_tokens"])))
        while self.lengths and self.lengths[0][0] < now - RECENT_WINDOW_S:
            self.lengths.popleft()
        self.seen = {k: v for k, v in self.seen.items() if v >= now - 2 * RECENT_WINDOW_S}
        proj: dict[int, float] = {}
        ready = len(state.serving())
        if self.config.policy == "predictive" and docs:
            engine = EngineConfig(**docs[0]["engine_config"])
            model = load_profile(str(docs[0]["profile"])).model
            load = Load(rate, [(p, o) for _, p, o in self.lengths], slope=max(0.0, slope),
                        margin=self.config.rate_margin)
            queues = [queues_from_state(d) for d in docs]
            waits = [max(0.0, self.config.startup_s - (time.time() - float(i.settings["starting"])))
                     for i in starting]
            cfg = self.config
            proj = projections(lambda n, m: project_ttft(engine, model, queues, n, replace(load, margin=m),
                                                         startup_s=cfg.startup_s,
                                                      horizon_s=cfg.horizon_s, starting=waits,
                                                      give_up_above=2 * cfg.target_ttft_s),
                               ready + len(starting), cfg)
        return Observation(now=now, ready=ready, starting=len(starting),
                           waiting=sum(int(d.get("waiting", 0)) for d in docs), arrival_rate=rate,
                           ttft_p99_s=observed_ttft_p99(*first_tokens(docs, now), now=now,
                                                        window_s=self.config.window_s),
                           projected_ttft_s=proj, last_up_s=self.last_up,
                           last_down_s=self.last_down)

    def tick(self) -> tuple[Observation, ScaleDecision]:
        state = load_state(self.state_dir)
        if not self.advisory and state is not None and state.kind == "local":
            ops.promote_ready(self.state_dir)
            ops.reap_drained(self.state_dir)
        now = time.monotonic()
        obs = self.observe(now)
        decision = self.policy.decide(obs)
        if decision.action != "hold":
            if decision.action == "up":
                self.last_up = now
            else:
                self.last_down = now
            if not self.advisory:
                self._act(obs, decision)
        self._record(obs, decision)
        return obs, decision

    def _act(self, obs: Observation, decision: ScaleDecision) -> None:
        state = load_state(self.state_dir)
        if state is not None and state.kind == "ssh":  # whole hosts; blocks until they serve or are stopped
            from blockctl.cluster.autoscale_ssh import scale_ssh

            asyncio.run(scale_ssh(self.state_dir, decision.target))
        elif decision.action == "up":
            ops.launch(self.state_dir, decision.target - obs.current, startup_delay_s=self.startup_delay_s)
        else:
            ops.drain(self.state_dir, obs.current - decision.target)

    def _record(self, obs: Observation, decision: ScaleDecision) -> None:
        line = {"time": time.time(), "advisory": self.advisory, **decision.to_json(), "ready": obs.ready,
                "starting": obs.starting, "rate": round(obs.arrival_rate, 3),
                "projected_ttft_s": {str(k): round(v, 4) for k, v in obs.projected_ttft_s.items()},
                "observed_ttft_s": obs.ttft_p99_s,
                "state_failures": {k: v for k, v in self.state_failures.items() if v},
                "state_failures_total": self.state_failures_total}
        with open(self.state_dir / DECISIONS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (time, rate) points; 0 with fewer than three."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (r - mr) for t, r in points) / var if var > 0 else 0.0


# ---- the background process ----------------------------------------------------------------------------------
def _is_ours(pid: int, state_dir: Path) -> bool:
    try:
        cmd = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    pairs = set(itertools.pairwise(cmd))
    return ("-m", MODULE) in pairs and ("--state-dir", str(state_dir)) in pairs


def running_pid(state_dir: Path) -> int | None:
    """The controller's PID when one runs for ``state_dir``."""
    try:
        pid = int(json.loads((state_dir / CONFIG_FILE).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _is_ours(pid, state_dir) else None


def start(state_dir: Path, config: AutoscaleConfig, *, advisory: bool, startup_delay_s: float) -> int:
    """Start the controller in the background (replacing a running one); returns its PID."""
    from blockctl.cluster import procs

    config.validate()
    stop(state_dir)
    doc = {"config": asdict(config), "advisory": advisory, "startup_delay_s": startup_delay_s}
    (state_dir / CONFIG_FILE).write_text(json.dumps(doc) + "\n", encoding="utf-8")
    pid = procs.spawn([sys.executable, "-m", MODULE, "--state-dir", str(state_dir)],
                      logs_dir(state_dir) / "autoscaler.log")
    (state_dir / CONFIG_FILE).write_text(json.dumps({**doc, "pid": pid}) + "\n", encoding="utf-8")
    return pid


def stop(state_dir: Path, *, timeout_s: float = 10.0) -> int | None:
    """Stop the controller of ``state_dir`` if one runs; returns its PID."""
    pid = running_pid(state_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            psutil.Process(pid).wait(timeout_s)
    (state_dir / CONFIG_FILE).unlink(missing_ok=True)
    return pid


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    doc = json.loads((args.state_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    config = AutoscaleConfig(**doc["config"])
    ctl = Controller(args.state_dir, config, advisory=bool(doc["advisory"]),
                     startup_delay_s=float(doc.get("startup_delay_s", 0.0)))
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    while not stopping and load_state(args.state_dir) is not None:
        started = time.monotonic()
        try:
            _, decision = ctl.tick()
            print(f"{time.strftime('%H:%M:%S')} {decision.action} -> {decision.target}: {decision.reason}",
                  flush=True)
        except Exception as exc:  # the loop outlives a failed observation or action; it is logged
            print(f"{time.strftime('%H:%M:%S')} tick failed: {exc!r}", flush=True)
        while not stopping and time.monotonic() - started < config.interval_s:
            time.sleep(0.1)


if __name__ == "__main__":
    main()
