"""Tensor-parallel all-reduce cost: a ring model (pure) and its measurement with torch.distributed.

A tensor-parallel step of a decoder does two all-reduces per layer (after attention and after the MLP), each of
``tokens × hidden × dtype_bytes`` bytes. A ring all-reduce over ``tp`` GPUs costs about
``2 (tp − 1) · latency + 2 (tp − 1) / tp · bytes / bus_bandwidth``. The per-step cost added to a one-GPU shard's
measured step time is therefore ``2 · layers · allreduce(bytes)``. The two constants are measured when ``tp``
GPUs are present (NCCL), and otherwise default to NVLink-class figures that the user can override.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AllReduceModel:
    latency_us: float = 8.0  # per ring hop
    bus_gbps: float = 300.0  # effective bus bandwidth, GB/s

    def allreduce_ms(self, nbytes: float, tp: int) -> float:
        if tp <= 1:
            return 0.0
        hops = 2 * (tp - 1)
        return (hops * self.latency_us * 1e-3) + (hops / tp) * nbytes / (self.bus_gbps * 1e9) * 1e3

    def step_ms(self, tokens: int, *, hidden: int, layers: int, dtype_bytes: int, tp: int) -> float:
        """All-reduce time one tensor-parallel step adds (two all-reduces per layer)."""
        return 2 * layers * self.allreduce_ms(tokens * hidden * dtype_bytes, tp)


def fit(sizes_bytes: list[int], ms: list[float], tp: int) -> AllReduceModel:
    """Least-squares fit of the ring model's two constants to measured all-reduce times."""
    hops = 2 * (tp - 1)
    a = np.column_stack([np.full(len(sizes_bytes), hops * 1e-3), (hops / tp) * np.asarray(sizes_bytes) / 1e9 * 1e3])
    (lat_us, inv_bw), *_ = np.linalg.lstsq(a, np.asarray(ms), rcond=None)
    lat_us = max(float(lat_us), 0.0)
    bw = 1.0 / float(inv_bw) if inv_bw > 0 else float("inf")
    return AllReduceModel(latency_us=lat_us, bus_gbps=bw)


def _worker(rank: int, tp: int, port: int, backend: str, sizes: list[int], repeats: int, out: object) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=tp)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    results = []
    for n in sizes:
        t = torch.ones(max(1, n // 2), dtype=torch.bfloat16 if backend == "nccl" else torch.float16, device=device)
        for _ in range(3):
            dist.all_reduce(t)
        samples = []
        for _ in range(repeats):
            if backend == "nccl":
                torch.cuda.synchronize(device)
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            if backend == "nccl":
                torch.cuda.synchronize(device)
            samples.append((time.perf_counter() - t0) * 1e3)
        results.append(statistics.median(samples))
    if rank == 0:
        out.put(results)  # type: ignore[attr-defined]
    dist.destroy_process_group()


def measure(tp: int, sizes_bytes: list[int], *, backend: str = "nccl", repeats: int = 10) -> list[float]:
    """Median all-reduce milliseconds per message size across ``tp`` local processes (one per GPU with NCCL;
    gloo on the CPU exercises the same code path)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, tp, port, backend, sizes_bytes, repeats, queue)) for r in range(tp)]
    for p in procs:
        p.start()
    try:
        result: list[float] = queue.get(timeout=300)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return result
