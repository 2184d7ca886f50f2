"""A profiling run: time every grid step of a shape on one device, then fit the step-time model into a profile."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blockctl.engine.fit import MeasuredRow
from blockctl.engine.profile import GpuSpec, build_profile
from blockctl.engine.shape import ModelShape
from blockctl.errors import ConfigError, ProfileError
from blockctl_agents.profiler import allreduce
from blockctl_agents.profiler.grid import DEFAULT_GRID, QUICK_GRID, GridSpec, points
from blockctl_agents.profiler.shape import resolve, shard
from blockctl_agents.profiler.step import StepModel
from blockctl_agents.profiler.timing import time_step

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunConfig:
    name: str  # profile name, e.g. "h100/llama-2-7b"
    shape: ModelShape
    device: str = "auto"  # auto | cuda | cpu
    grid: GridSpec = DEFAULT_GRID
    tp: int = 1
    warmup: int = 3
    repeats: int = 15
    share_layer_weights: bool = False
    seed: int = 0
    # Used for tp > 1 when fewer than tp GPUs are present to measure it (documented, user-overridable).
    allreduce_model: allreduce.AllReduceModel = field(default_factory=allreduce.AllReduceModel)


def pick_device(requested: str) -> str:
    import torch

    if requested in ("auto", "cuda"):
        if torch.cuda.is_available():
            return "cuda"
        raise ProfileError(
            "no CUDA GPU is visible to torch: `blockctl profile run` measures step latencies on a GPU",
            hint="run it on a GPU host (--host HOST), or pass --device cpu --model tiny to exercise the code path",
        )
    if requested == "cpu":
        return "cpu"
    raise ProfileError(f"unknown device {requested!r} (auto, cuda or cpu)")


def _device_spec(device: str) -> GpuSpec:
    import psutil
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return GpuSpec(name=str(props.name), memory_bytes=int(props.total_memory))
    return GpuSpec(name=f"CPU {platform.processor() or platform.machine()}", memory_bytes=psutil.virtual_memory().total)


def _allreduce_for(cfg: RunConfig, device: str) -> tuple[allreduce.AllReduceModel, dict[str, Any]]:
    if cfg.tp == 1:
        return cfg.allreduce_model, {}
    import torch

    if device == "cuda" and torch.cuda.device_count() >= cfg.tp:
        sizes = [1 << k for k in range(12, 27, 2)]
        ms = allreduce.measure(cfg.tp, sizes, backend="nccl")
        model = allreduce.fit(sizes, ms, cfg.tp)
        return model, {"measured": True, "sizes_bytes": sizes, "ms": ms, **_ar_doc(model)}
    return cfg.allreduce_model, {"measured": False, **_ar_doc(cfg.allreduce_model)}


def _ar_doc(model: allreduce.AllReduceModel) -> dict[str, float]:
    return {"latency_us": model.latency_us, "bus_gbps": model.bus_gbps}


def measure(cfg: RunConfig, progress: Progress | None = None) -> tuple[list[MeasuredRow], dict[str, Any]]:
    """Time every step of the grid; rows carry the all-reduce cost when tp > 1. Returns rows and measurement info."""
    import torch

    device = pick_device(cfg.device)
    dims = shard(cfg.shape, cfg.tp)
    ar_model, ar_doc = _allreduce_for(cfg, device)
    model = StepModel(dims, device, seed=cfg.seed, share_layer_weights=cfg.share_layer_weights)
    grid = points(cfg.grid)
    rows: list[MeasuredRow] = []
    started = time.monotonic()
    for i, point in enumerate(grid):
        t = time_step(model, point, warmup=cfg.warmup, repeats=cfg.repeats)
        extra = ar_model.step_ms(
            point.prefill_tokens + point.decode_batch,
            hidden=dims.hidden,
            layers=dims.layers,
            dtype_bytes=cfg.shape.dtype_bytes,
            tp=cfg.tp,
        )
        rows.append(
            MeasuredRow(
                **point.as_row(),
                ms_median=round(t.ms_median + extra, 4),
                ms_min=round(t.ms_min + extra, 4),
                ms_max=round(t.ms_max + extra, 4),
            )
        )
        if progress:
            progress(i + 1, len(grid))
    info = {
        "method": ("whole step captured in one CUDA graph, " if device == "cuda" else "eager on the CPU, ")
        + f"torch SDPA attention, median of {cfg.repeats} runs after {cfg.warmup} warm-ups",
        "description": f"{cfg.shape.name} shape, random {cfg.shape.dtype} weights"
        + (", one layer's weights shared by all layers" if cfg.share_layer_weights else ""),
        "torch": str(torch.__version__),
        "replays": cfg.repeats,
        "warmups": cfg.warmup,
        "overhead_included": False,
        "device": device,
        "tensor_parallel_size": cfg.tp,
        "seconds": round(time.monotonic() - started, 1),
        "host": platform.node(),
    }
    if ar_doc:
        info["allreduce"] = ar_doc
    return rows, info


def run(cfg: RunConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Measure and fit: the profile document (format of profiles/README.md), cross-validated error included."""
    rows, info = measure(cfg, progress)
    gpu = _device_spec(info["device"])
    return build_profile(cfg.name, gpu, cfg.shape, rows, info, cross_validate=len(rows) >= 10)


@dataclass(frozen=True)
class Options:
    """What the user asks for, as the CLI and the host-side entry point take it (one mapping to RunConfig)."""

    model: str
    name: str
    device: str = "auto"
    grid: str = "default"  # default | quick
    tp: int = 1
    max_num_batched_tokens: int = 0  # 0: no cap
    max_num_seqs: int = 0
    max_model_len: int = 0
    repeats: int = 15
    warmup: int = 3
    share_layer_weights: bool = False
    allreduce_latency_us: float = 8.0
    allreduce_bus_gbps: float = 300.0

    def argv(self) -> list[str]:
        """The same options as command-line flags of ``python -m blockctl_agents.profiler``."""
        out: list[str] = []
        for key, value in self.__dict__.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                out += [flag] if value else []
            else:
                out += [flag, str(value)]
        return out

    def to_config(self) -> RunConfig:
        spec = {"default": DEFAULT_GRID, "quick": QUICK_GRID}.get(self.grid)
        if spec is None:
            raise ConfigError(f"unknown grid {self.grid!r} (default or quick)", key="--grid")
        if self.max_num_batched_tokens or self.max_num_seqs or self.max_model_len:
            spec = spec.capped(
                max_num_batched_tokens=self.max_num_batched_tokens or max(spec.prefill_tokens),
                max_num_seqs=self.max_num_seqs or max(spec.decode_batch),
                max_model_len=self.max_model_len or max(spec.decode_context) + 1,
            )
        return RunConfig(
            name=self.name,
            shape=resolve(self.model),
            device=self.device,
            grid=spec,
            tp=self.tp,
            warmup=self.warmup,
            repeats=self.repeats,
            share_layer_weights=self.share_layer_weights,
            allreduce_model=allreduce.AllReduceModel(self.allreduce_latency_us, self.allreduce_bus_gbps),
        )
