"""Readers of user workload files: ShareGPT JSON, BurstGPT CSV, Azure LLM inference trace CSV, JSONL."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from blockctl.bench.workloads.dataset import load_sharegpt_file
from blockctl.bench.workloads.tokenize import count_tokens
from blockctl.bench.workloads.types import WorkItem, Workload
from blockctl.errors import WorkloadError

_BURSTGPT_COLUMNS = ("timestamp", "request tokens", "response tokens")
_AZURE_COLUMNS = ("timestamp", "contexttokens", "generatedtokens")
_CACHE_MIN_BYTES = 4 << 20  # cache tokenized ShareGPT files at least this big


def read_file(path: Path, *, limit: int | None = None) -> Workload:
    """Read a workload file, choosing the reader by suffix (and, for CSV, by header).

    ``limit`` stops reading trace files (CSV, JSONL) after that many usable rows, so a multi-GB trace is
    not read whole when only its first N requests are replayed. ShareGPT JSON is always read whole.
    """
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        items = load_sharegpt_file(path, use_cache=path.stat().st_size >= _CACHE_MIN_BYTES)
        return Workload(str(path), items)
    if suffix == ".csv":
        return read_csv(path, limit=limit)
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, limit=limit)
    raise WorkloadError(
        f"{path}: unknown workload file type '{suffix}'",
        hint="use ShareGPT .json, BurstGPT/Azure .csv or .jsonl with prompt|prompt_tokens, output_tokens",
    )


def read_csv(path: Path, *, limit: int | None = None) -> Workload:
    """BurstGPT or Azure trace CSV, told apart by the header. Timestamps become seconds from the first row."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise WorkloadError(f"{path}:1: empty CSV file")
        cols = {name.strip().lower(): i for i, name in enumerate(header)}
        if all(c in cols for c in _BURSTGPT_COLUMNS):
            return _read_burstgpt(path, reader, cols, limit)
        if all(c in cols for c in _AZURE_COLUMNS):
            return _read_azure(path, reader, cols, limit)
    raise WorkloadError(
        f"{path}:1: unrecognised CSV header {header!r}",
        hint="BurstGPT needs 'Timestamp, Request tokens, Response tokens'; "
        "the Azure trace needs 'TIMESTAMP, ContextTokens, GeneratedTokens'",
    )


def _read_burstgpt(path: Path, rows: Iterator[list[str]], cols: dict[str, int], limit: int | None) -> Workload:
    items: list[WorkItem] = []
    failed = 0
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        ts = _number(path, line, row, cols["timestamp"], "Timestamp", float)
        prompt = _number(path, line, row, cols["request tokens"], "Request tokens", int)
        output = _number(path, line, row, cols["response tokens"], "Response tokens", int)
        if prompt < 0 or output < 0:
            raise WorkloadError(f"{path}:{line}: negative token count")
        if output == 0 or prompt == 0:  # BurstGPT logs failed requests with zero response tokens
            failed += 1
            continue
        items.append(WorkItem(prompt=None, prompt_tokens=prompt, output_tokens=output, timestamp=ts))
        if limit is not None and len(items) >= limit:
            break
    notes = [f"skipped {failed} failed requests (zero tokens) in {path.name}"] if failed else []
    return Workload(str(path), _relative(path, items), notes)


def _read_azure(path: Path, rows: Iterator[list[str]], cols: dict[str, int], limit: int | None) -> Workload:
    items: list[WorkItem] = []
    skipped = 0
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        raw_ts = _cell(path, line, row, cols["timestamp"], "TIMESTAMP")
        ts = _parse_datetime(path, line, raw_ts)
        prompt = _number(path, line, row, cols["contexttokens"], "ContextTokens", int)
        output = _number(path, line, row, cols["generatedtokens"], "GeneratedTokens", int)
        if prompt < 0 or output < 0:
            raise WorkloadError(f"{path}:{line}: negative token count")
        if prompt == 0 or output == 0:
            skipped += 1
            continue
        items.append(WorkItem(prompt=None, prompt_tokens=prompt, output_tokens=output, timestamp=ts))
        if limit is not None and len(items) >= limit:
            break
    notes = [f"skipped {skipped} rows with zero tokens in {path.name}"] if skipped else []
    return Workload(str(path), _relative(path, items), notes)


def read_jsonl(path: Path, *, limit: int | None = None) -> Workload:
    """Objects, one a line: ``prompt`` or ``prompt_tokens``; ``output_tokens``; optional ``timestamp``."""
    raw: list[tuple[str | None, int | None, int, float | None]] = []
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"{path}:{line}: invalid JSON: {exc.msg}") from None
            raw.append(_jsonl_fields(path, line, obj))
            if limit is not None and len(raw) >= limit:
                break
    texts = [p for p, _, _, _ in raw if p is not None]
    counted = iter(count_tokens(texts))
    items = [WorkItem(p, pt if pt is not None else next(counted), o, ts) for p, pt, o, ts in raw]
    if any(i.prompt_tokens < 1 for i in items):
        raise WorkloadError(f"{path}: a prompt has no tokens")
    return Workload(str(path), _relative(path, items))


def _jsonl_fields(path: Path, line: int, obj: Any) -> tuple[str | None, int | None, int, float | None]:
    where = f"{path}:{line}"
    if not isinstance(obj, dict):
        raise WorkloadError(f"{where}: expected a JSON object")
    prompt = obj.get("prompt")
    prompt_tokens = obj.get("prompt_tokens")
    if prompt is not None and not isinstance(prompt, str):
        raise WorkloadError(f"{where}: 'prompt' must be a string")
    if prompt_tokens is not None and not _is_int(prompt_tokens, minimum=1):
        raise WorkloadError(f"{where}: 'prompt_tokens' must be a positive integer")
    if prompt is None and prompt_tokens is None:
        raise WorkloadError(f"{where}: needs 'prompt' or 'prompt_tokens'")
    output = obj.get("output_tokens")
    if not _is_int(output, minimum=1):
        raise WorkloadError(f"{where}: 'output_tokens' must be a positive integer")
    ts = obj.get("timestamp")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0):
        raise WorkloadError(f"{where}: 'timestamp' must be a non-negative number of seconds")
    assert isinstance(output, int)
    return prompt, prompt_tokens, output, None if ts is None else float(ts)


def _is_int(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _cell(path: Path, line: int, row: list[str], index: int, column: str) -> str:
    if index >= len(row):
        raise WorkloadError(f"{path}:{line}: missing column '{column}'")
    return row[index].strip()


def _number(path: Path, line: int, row: list[str], index: int, column: str, kind: type[Any]) -> Any:
    text = _cell(path, line, row, index, column)
    try:
        return kind(float(text)) if kind is int and text.endswith(".0") else kind(text)
    except ValueError:
        raise WorkloadError(f"{path}:{line}: column '{column}': not a number: {text[:40]!r}") from None


def _parse_datetime(path: Path, line: int, text: str) -> float:
    """Azure trace time stamps, e.g. ``2023-11-16 18:15:46.6805900`` (7 fraction digits), in epoch seconds."""
    base, dot, frac = text.partition(".")
    digits = "".join(c for c in frac if c.isdigit())
    tail = frac[len(digits) :]
    try:
        moment = datetime.fromisoformat(base + tail)
    except ValueError:
        raise WorkloadError(f"{path}:{line}: column 'TIMESTAMP': not a date-time: {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp() + (float("0." + digits) if dot and digits else 0.0)


def _relative(path: Path, items: list[WorkItem]) -> list[WorkItem]:
    if not items:
        raise WorkloadError(f"{path}: no usable requests")
    stamps = [i.timestamp for i in items if i.timestamp is not None]
    if not stamps:
        return items
    t0 = min(stamps)
    if len(stamps) == len(items):
        items = sorted(items, key=lambda i: i.timestamp or 0.0)  # stable: replay in time order
    return [WorkItem(i.prompt, i.prompt_tokens, i.output_tokens, _shift(i.timestamp, t0)) for i in items]


def _shift(ts: float | None, t0: float) -> float | None:
    return None if ts is None else ts - t0
