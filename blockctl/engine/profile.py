"""Step-time profiles: one JSON file per (GPU, model) under profiles/, loaded into a fitted StepTimeModel.

The file format is documented in profiles/README.md. ``build_profile`` turns measured rows into a profile
document (fit and cross-validation included); ``load_profile`` reads one by name or path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from blockctl.engine.fit import Fitter, MeasuredRow, fit_report
from blockctl.engine.shape import KNOWN_GPUS, KNOWN_MODELS, ModelShape, num_kv_blocks
from blockctl.engine.steptime import DEFAULT_OVERHEAD_MS, StepTimeModel, StepTimeParams
from blockctl.engine.types import EngineConfig
from blockctl.errors import ProfileError

FORMAT = "blockctl-profile/1"
DEFAULT_PROFILE = "h100/llama-2-7b"
FIT_FORM = "roofline-linear+attention/1"


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class Profile:
    """A loaded profile: GPU, model shape, measured rows and the fitted step-time model."""

    name: str
    gpu: GpuSpec
    shape: ModelShape
    measurement: dict[str, Any]
    rows: tuple[MeasuredRow, ...]
    fit: dict[str, Any]
    model: StepTimeModel
    source: str = field(default="")

    def engine_defaults(
        self,
        *,
        gpu_memory_utilization: float = 0.9,
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 2048,
        max_model_len: int | None = None,
    ) -> EngineConfig:
        """The engine settings vLLM would pick for this GPU and model (KV blocks from the memory left)."""
        blocks = num_kv_blocks(
            self.gpu.memory_bytes, self.shape, gpu_memory_utilization=gpu_memory_utilization,
            block_size=block_size, max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
        )
        return EngineConfig(
            block_size=block_size, num_gpu_blocks=blocks, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len or self.shape.max_position_embeddings,
        )


def profiles_root() -> Path:
    """The profiles shipped with blockctl (the top-level ``profiles/`` folder, package ``blockctl_profiles``)."""
    return Path(str(resources.files("blockctl_profiles")))


def user_profiles_dir() -> Path:
    """Profiles measured on this machine: $BLOCKCTL_PROFILES_DIR, else $XDG_DATA_HOME/blockctl/profiles."""
    env = os.environ.get("BLOCKCTL_PROFILES_DIR")
    if env:
        return Path(env).expanduser()
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "blockctl" / "profiles"


def _search_dirs() -> list[Path]:
    return [user_profiles_dir(), profiles_root()]  # a profile measured here wins over a shipped namesake


def list_profiles() -> list[str]:
    """Names (``gpu/model``) of the profiles measured here and shipped with blockctl, sorted."""
    names: set[str] = set()
    for root in _search_dirs():
        if root.is_dir():
            names.update(p.relative_to(root).with_suffix("").as_posix() for p in root.glob("*/*.json"))
    return sorted(names)


def _resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return path
    if name_or_path and ".." not in name_or_path and not name_or_path.startswith("/"):
        for root in _search_dirs():
            candidate = root / f"{name_or_path}.json"
            if candidate.is_file():
                return candidate
    raise ProfileError(
        f"no profile named {name_or_path!r} (known: {', '.join(list_profiles()) or 'none'})",
        hint="blockctl profile list",
    )


def load_profile(name_or_path: str = DEFAULT_PROFILE, *, overhead_ms: float | None = None) -> Profile:
    """Load a shipped profile by name (``h100/llama-2-7b``) or a profile file by path."""
    path = _resolve(name_or_path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    return profile_from_document(doc, source=str(path), overhead_ms=overhead_ms)


def _need(doc: dict[str, Any], key: str, kind: type, source: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise ProfileError(f"{source}: '{key}' must be a {kind.__name__}")
    return value


def profile_from_document(doc: Any, *, source: str, overhead_ms: float | None = None) -> Profile:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProfileError(f"{source}: not a {FORMAT} document (missing or wrong 'format')")
    gpu = _need(doc, "gpu", dict, source)
    try:
        gpu_spec = GpuSpec(name=str(gpu["name"]), memory_bytes=int(gpu["memory_bytes"]))
    except (KeyError, TypeError, ValueError):
        raise ProfileError(f"{source}: 'gpu' needs 'name' and 'memory_bytes'") from None
    shape = ModelShape.from_dict(_need(doc, "model", dict, source), source=source)
    raw_rows = _need(doc, "rows", list, source)
    rows = tuple(MeasuredRow.from_dict(r, source=source, index=i) for i, r in enumerate(raw_rows))
    fit = _need(doc, "fit", dict, source)
    params = StepTimeParams.from_dict(_need(fit, "params", dict, source), source=source)
    if overhead_ms is None:
        overhead_ms = float(fit.get("overhead_ms", DEFAULT_OVERHEAD_MS))
    model = StepTimeModel(
        params=params,
        overhead_ms=overhead_ms,
        rel_noise=float(fit.get("rel_noise", 0.0)),
    )
    return Profile(
        name=str(_need(doc, "name", str, source)), gpu=gpu_spec, shape=shape,
        measurement=dict(doc.get("measurement") or {}), rows=rows, fit=fit, model=model, source=source,
    )


def build_profile(
    name: str,
    gpu: GpuSpec,
    shape: ModelShape,
    rows: Sequence[MeasuredRow],
    measurement: dict[str, Any],
    *,
    overhead_ms: float = DEFAULT_OVERHEAD_MS,
    cross_validate: bool = True,
    fitter: Fitter | None = None,
) -> dict[str, Any]:
    """A profile document from measured rows: fits the step-time model and records its CV error."""
    report = fit_report(rows, cross_validate=cross_validate, fitter=fitter)
    fit = {"form": FIT_FORM, "overhead_ms": overhead_ms, **report.to_dict()}
    return {
        "format": FORMAT,
        "name": name,
        "gpu": {"name": gpu.name, "memory_bytes": gpu.memory_bytes},
        "model": shape.to_dict(),
        "measurement": measurement,
        "rows": [r.to_dict() for r in rows],
        "fit": _finite(fit),
    }


def _finite(obj: Any) -> Any:
    """JSON has no NaN: drop figures that were not computed."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items() if not (isinstance(v, float) and math.isnan(v))}
    return obj


def convert_measured_file(path: Path, *, name: str, model: str) -> dict[str, Any]:
    """Convert a measured grid (``{"info": {...}, "rows": [...]}``, the shared seed data) into a profile."""
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read measurements: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ProfileError(f"{path}: expected an object with 'info' and 'rows'")
    info = doc.get("info") or {}
    gpu_name = str(info.get("gpu", ""))
    if gpu_name not in KNOWN_GPUS:
        raise ProfileError(f"{path}: unknown GPU {gpu_name!r}; known: {', '.join(KNOWN_GPUS)}")
    if model not in KNOWN_MODELS:
        raise ProfileError(f"unknown model {model!r}; known: {', '.join(KNOWN_MODELS)}")
    rows = [MeasuredRow.from_dict(r, source=str(path), index=i) for i, r in enumerate(doc["rows"])]
    measurement = {
        "method": info.get("method", ""),
        "description": info.get("model", ""),
        "torch": info.get("torch", ""),
        "replays": 15,
        "warmups": 3,
        "overhead_included": False,
        "source_file": path.name,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
    }
    gpu = GpuSpec(gpu_name, KNOWN_GPUS[gpu_name])
    return build_profile(name, gpu, KNOWN_MODELS[model], rows, measurement)


def write_profile(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
