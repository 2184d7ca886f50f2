"""Workloads: built-in datasets, synthetic generators, trace files, and arrival processes.

load_workload("sharegpt", num_requests=1000, seed=0) -> list[WorkItem]
arrival_times("gamma", 1000, qps=4.0, burstiness=0.5, seed=0) -> numpy array of send offsets (s)
"""

from __future__ import annotations

import random
from pathlib import Path

from blockctl.bench.workloads.arrivals import PROCESSES, ArrivalSpec, arrival_times, parse_arrival
from blockctl.bench.workloads.dataset import load_builtin_sharegpt, load_sharegpt_file
from blockctl.bench.workloads.files import read_file
from blockctl.bench.workloads.prefixed import PREFIX_GENERATORS, sharegpt_multiturn
from blockctl.bench.workloads.prompts import synth_prompt
from blockctl.bench.workloads.synthetic import GENERATORS as _SYNTHETIC
from blockctl.bench.workloads.types import WorkItem, Workload
from blockctl.errors import WorkloadError

GENERATORS = {**_SYNTHETIC, **PREFIX_GENERATORS}
# also sharegpt:train, sharegpt:val, and sharegpt-multiturn:SPLIT
WORKLOADS: tuple[str, ...] = ("sharegpt", "sharegpt:test", *GENERATORS, "sharegpt-multiturn:test")
SPLITS = ("train", "val", "test")

__all__ = [
    "PROCESSES",
    "WORKLOADS",
    "ArrivalSpec",
    "WorkItem",
    "Workload",
    "arrival_times",
    "load_sharegpt_file",
    "load_workload",
    "parse_arrival",
    "read_workload",
    "synth_prompt",
]


def read_workload(spec: str, *, num_requests: int, seed: int = 0) -> Workload:
    """``num_requests`` items of the workload ``spec`` (a name in WORKLOADS or a file path), with notes.

    ``sharegpt:SPLIT`` keeps only the prompts of a length tagger's train, val or test split (held out:
    ``test``).

    Datasets without time (``sharegpt``, ShareGPT JSON files) are shuffled with ``seed`` like vLLM's
    benchmark; traces keep their order and yield their first ``num_requests`` usable rows. When a source has
    fewer items than asked, it is repeated (reshuffled, or for traces shifted to follow the previous pass)
    and a note says so.
    """
    if num_requests < 1:
        raise WorkloadError(f"the number of requests must be >= 1 (got {num_requests})")
    if spec in GENERATORS:
        return Workload(spec, GENERATORS[spec](num_requests, seed))
    if spec == "sharegpt":
        return Workload(spec, *_take(load_builtin_sharegpt(), num_requests, seed, shuffle=True))
    if spec.startswith("sharegpt:"):
        return _sharegpt_split(spec, num_requests, seed)
    if spec.startswith("sharegpt-multiturn:"):
        split = spec.partition(":")[2]
        if split not in SPLITS:
            raise WorkloadError(f"unknown workload '{spec}': the split must be one of {', '.join(SPLITS)}")
        return Workload(spec, sharegpt_multiturn(num_requests, seed, split))
    path = Path(spec).expanduser()
    if not path.exists():
        raise WorkloadError(
            f"unknown workload '{spec}': not a built-in workload nor an existing file",
            hint=f"use one of {', '.join(WORKLOADS)} or a path to a .json/.csv/.jsonl file",
        )
    loaded = read_file(path, limit=num_requests)
    shuffle = path.suffix.lower() == ".json"
    items, notes = _take(loaded.items, num_requests, seed, shuffle=shuffle)
    return Workload(str(path), items, [*loaded.notes, *notes])


def load_workload(spec: str, *, num_requests: int, seed: int = 0) -> list[WorkItem]:
    """The items of :func:`read_workload` (see there)."""
    return read_workload(spec, num_requests=num_requests, seed=seed).items


def _sharegpt_split(spec: str, num_requests: int, seed: int) -> Workload:
    """``sharegpt:SPLIT``: only the ShareGPT prompts in a tagger's SPLIT (``blockctl.tagger.dataset.split_of``,
    a hash of the prompt text), so a tagger trained on ``sharegpt`` is measured on prompts it never saw."""
    from blockctl.tagger.dataset import split_of

    split = spec.partition(":")[2]
    if split not in SPLITS:
        raise WorkloadError(f"unknown workload '{spec}': the split must be one of {', '.join(SPLITS)}")
    every = load_builtin_sharegpt()
    pool = [i for i in every if i.prompt is not None and split_of(i.prompt) == split]
    items, notes = _take(pool, num_requests, seed, shuffle=True)
    note = f"{len(pool)} of ShareGPT's {len(every)} requests are in the tagger's {split} split"
    return Workload(spec, items, [note, *notes])


def _take(pool: list[WorkItem], n: int, seed: int, *, shuffle: bool) -> tuple[list[WorkItem], list[str]]:
    rng = random.Random(seed)
    out: list[WorkItem] = []
    offset = 0.0
    passes = 0
    while len(out) < n:
        batch = list(pool)
        if shuffle:
            rng.shuffle(batch)
        if passes and batch[0].timestamp is not None:
            stamps = [i.timestamp or 0.0 for i in batch]
            span = max(stamps) - min(stamps)
            offset += span + (span / max(1, len(batch) - 1))  # keep the mean gap across the seam
            batch = [WorkItem(i.prompt, i.prompt_tokens, i.output_tokens, (i.timestamp or 0.0) + offset) for i in batch]
        out.extend(batch[: n - len(out)])
        passes += 1
    notes = [f"the source has {len(pool)} usable requests; repeated it to make {n}"] if passes > 1 else []
    return out, notes
