"""`blockctl bench overhead --agents real`: the latency the whole routing path adds in front of a real engine.

Setup: a local cluster (``blockctl up --local``: emulated engines, each behind its real predictor agent, one
scheduler daemon), loopback only. Sequential 1-token non-streamed completions alternate between calling
instance 0's engine directly and going through the scheduler (count tokens, ask every agent ``/predict``,
choose, forward to the agent, which tracks the request and relays it to its engine). Added = via − direct at
p50 and p99: the price of scheduler + agent + ``/predict`` per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import psutil

from blockctl.cluster.local import LocalSpec, local_cluster
from blockctl.scheduler.overhead import _latency

ONE_TOKEN = json.dumps({"model": "emulated", "prompt": "Say hello to the benchmark, briefly.",
                        "max_tokens": 1}).encode()
TARGETS = {"added_p50_ms": 2.0, "added_p99_ms": 4.0}  # issue 12 §5


def run_overhead_agents(*, instances: int = 2, latency_requests: int = 500, policy: str = "block",
                        base_port: int = 18000, timeout_s: float = 60.0) -> dict[str, Any]:
    """Bring up a local cluster on ``base_port``, measure, bring it down; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="blockctl-overhead-agents-") as tmp:
        spec = LocalSpec(instances=instances, schedulers=1, policy=policy, base_port=base_port,
                         request_log_enabled=False)
        with local_cluster(spec, Path(tmp), timeout_s=timeout_s) as state:
            sched = state.schedulers[0]
            engine_port = int(state.instances[0].settings["engine_port"])
            sched_port = int(sched.settings["port"])
            latency = asyncio.run(_latency(engine_port, sched_port, latency_requests, psutil.Process(sched.pid),
                                           ONE_TOKEN))
    return {"policy": policy, "instances": instances, "agents": "real", "machine_cpus": len(os.sched_getaffinity(0)),
            "load_avg_1m": round(os.getloadavg()[0], 2), "latency": latency, "targets": TARGETS}
