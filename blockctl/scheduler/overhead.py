"""`blockctl bench overhead`: the scheduler's added latency and its request rate on one core.

Setup: one scheduler daemon (pinned to one CPU for the throughput run) in front of null agents
(``blockctl.scheduler.nullagent``: instant canned answers, pinned elsewhere), so the measured cost is the
scheduler's own: parse and validate, count prompt tokens, ask every agent ``/predict`` (policy ``block``),
choose, forward, relay. The load generator is a minimal keep-alive HTTP/1.1 client, far cheaper per request
than the daemon it measures.

- latency: sequential requests alternating "direct" (to a null agent) and "via" (through the scheduler);
  added = via − direct at p50 and p99.
- throughput: ``concurrency`` connections sending non-streaming requests as fast as answers come.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from blockctl.cluster import procs
from blockctl.cluster.schedulers import SCHEDULER_MODULE
from blockctl.cluster.state import ClusterState, InstanceState, ensure_token, save_state
from blockctl.errors import UpstreamError

BODY = json.dumps({"model": "emulated", "prompt": "Say hello to the benchmark, briefly.", "max_tokens": 16}).encode()
NULL_MODULE = "blockctl.scheduler.nullagent"


class RawClient:
    """One keep-alive HTTP/1.1 connection; ``post`` returns the status (bodies need a content-length)."""

    def __init__(self, port: int, body: bytes = BODY) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._head = (f"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                      f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body

    async def post(self) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        self._writer.write(self._head)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                       if k.strip().lower() == "content-length"), None)
        if length is None:
            raise UpstreamError("answer without content-length", url=f"http://127.0.0.1:{self.port}")
        await self._reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


def _pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p99": round(float(np.percentile(arr, 99)), 3),
            "mean": round(float(arr.mean()), 3)}


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _latency(direct_port: int, via_port: int, n: int, sched: psutil.Process,
                   body: bytes = BODY) -> dict[str, Any]:
    direct, via = RawClient(direct_port, body), RawClient(via_port, body)
    d: list[float] = []
    v: list[float] = []
    try:
        for _ in range(50):  # warm both paths (connections, caches, the daemon's first-call costs)
            await direct.post()
            await via.post()
        cpu0 = _cpu_s(sched)
        for _ in range(n):
            for client, out in ((direct, d), (via, v)):
                t0 = time.perf_counter()
                if await client.post() != 200:
                    raise UpstreamError("non-200 answer during the latency run")
                out.append(time.perf_counter() - t0)
        cpu_ms = 1000 * (_cpu_s(sched) - cpu0) / n
    finally:
        await direct.close()
        await via.close()
    pd, pv = _pct(d), _pct(v)
    return {"requests": n, "direct_ms": pd, "scheduler_ms": pv,
            "added_p50_ms": round(pv["p50"] - pd["p50"], 3), "added_p99_ms": round(pv["p99"] - pd["p99"], 3),
            "scheduler_cpu_ms_per_request": round(cpu_ms, 3)}


async def _throughput(port: int, n: int, concurrency: int, sched: psutil.Process) -> dict[str, Any]:
    clients = [RawClient(port) for _ in range(concurrency)]
    left = n
    errors = 0

    async def worker(client: RawClient) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            if await client.post() != 200:
                errors += 1

    try:
        await asyncio.gather(*(c.post() for c in clients))  # open every connection first
        cpu0, t0 = _cpu_s(sched), time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        elapsed, busy = time.perf_counter() - t0, _cpu_s(sched) - cpu0
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    # On a shared machine the daemon gets only part of its core; req/s per CPU-second of the daemon is what
    # one whole core would sustain (the daemon is single-threaded and CPU-bound when saturated).
    return {"requests": n, "concurrency": concurrency, "seconds": round(elapsed, 3),
            "req_per_s": round(n / elapsed, 1), "errors": errors,
            "scheduler_cpu_pct": round(100 * busy / elapsed, 1),
            "req_per_cpu_second": round(n / busy, 1) if busy > 0 else None}


def _free_ports(count: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def run_overhead(*, requests: int = 2000, concurrency: int = 32, policy: str = "block", instances: int = 2,
                 latency_requests: int = 500, timeout_s: float = 60.0) -> dict[str, Any]:
    """Start a null-agent process and one scheduler daemon, measure, stop both; returns the figures."""
    cpus = sorted(os.sched_getaffinity(0))
    sched_cpu, other = cpus[-1], set(cpus[:-1]) or {cpus[-1]}
    ports = _free_ports(instances + 1)
    agent_ports, sched_port = ports[:-1], ports[-1]
    with tempfile.TemporaryDirectory(prefix="blockctl-overhead-") as tmp:
        state_dir = Path(tmp)
        ensure_token(state_dir)
        save_state(state_dir, ClusterState(kind="local", policy=policy, instances=tuple(
            InstanceState(name=f"null{n}", host="127.0.0.1", agent_url=f"http://127.0.0.1:{p}",
                          engine_url=f"http://127.0.0.1:{p}", profile="null") for n, p in enumerate(agent_ports))))
        null_argv = [sys.executable, "-m", NULL_MODULE, *(a for p in agent_ports for a in ("--port", str(p)))]
        null_pid = procs.spawn(null_argv, state_dir / "null.log")
        sched_pid = procs.spawn([sys.executable, "-m", SCHEDULER_MODULE, "--state-dir", str(state_dir),
                                 "--port", str(sched_port), "--policy", policy, "--log-level", "warning"],
                                state_dir / "scheduler.log")
        try:
            procs.wait_healthy([(f"http://127.0.0.1:{p}/health", null_pid, state_dir / "null.log")
                                for p in agent_ports] +
                               [(f"http://127.0.0.1:{sched_port}/health", sched_pid, state_dir / "scheduler.log")],
                               timeout_s=timeout_s)
            sched = psutil.Process(sched_pid)
            # Latency unpinned: pinning only adds waits for one (possibly busy) core to every hop.
            latency = asyncio.run(_latency(agent_ports[0], sched_port, latency_requests, sched))
            # Throughput on one core: the daemon alone on it, null agents and load generator elsewhere.
            os.sched_setaffinity(null_pid, other)
            os.sched_setaffinity(sched_pid, {sched_cpu})
            os.sched_setaffinity(0, other)
            try:
                throughput = asyncio.run(_throughput(sched_port, requests, concurrency, sched))
            finally:
                os.sched_setaffinity(0, set(cpus))
        finally:
            procs.stop([(sched_pid, (SCHEDULER_MODULE, sched_port)), (null_pid, (NULL_MODULE, agent_ports[0]))])
    return {"policy": policy, "instances": instances, "scheduler_cpu": sched_cpu, "machine_cpus": len(cpus),
            "load_avg_1m": round(os.getloadavg()[0], 2), "latency": latency, "throughput": throughput,
            "targets": {"added_p50_ms": 2.0, "req_per_s": 500.0}}
