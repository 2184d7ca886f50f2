"""Timing one step: on a GPU the whole step is captured as one CUDA graph and replayed; on a CPU it runs eagerly."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from blockctl_agents.profiler.grid import GridPoint
from blockctl_agents.profiler.step import StepModel


@dataclass(frozen=True, slots=True)
class Timing:
    ms_median: float
    ms_min: float
    ms_max: float


def time_step(model: StepModel, point: GridPoint, *, warmup: int = 3, repeats: int = 15) -> Timing:
    inputs = model.inputs(point)
    if model.device.type == "cuda":
        samples = _cuda_graph_samples(model, inputs, warmup, repeats)
    else:
        samples = _eager_samples(model, inputs, warmup, repeats)
    del inputs
    return Timing(
        ms_median=round(statistics.median(samples), 4),
        ms_min=round(min(samples), 4),
        ms_max=round(max(samples), 4),
    )


def _eager_samples(model: StepModel, inputs: dict[str, Any], warmup: int, repeats: int) -> list[float]:
    torch = model.torch
    with torch.inference_mode():
        for _ in range(warmup):
            model.forward(inputs)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.forward(inputs)
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def _cuda_graph_samples(model: StepModel, inputs: dict[str, Any], warmup: int, repeats: int) -> list[float]:
    torch = model.torch
    with torch.inference_mode():
        # Kernels are selected and memory pools warmed on a side stream before capture, as torch requires.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                model.forward(inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model.forward(inputs)
        for _ in range(warmup):
            graph.replay()
        torch.cuda.synchronize()
        samples = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
        del graph
    return samples
