"""The scheduler's request log: one JSON line per completed request, size-rotated, read back for retraining.

Line format (keys always present unless marked)::

    {"time": 1764300000.1, "prompt_sha256": "…", "prompt_tokens": 812, "predicted_output_tokens": 240,
     "output_tokens": 198, "model": "llama-2-7b", "instance": "gpu0", "source": "tagger",
     "status": 200, "outcome": "completed",   # only when the writer knows them (the scheduler does)
     "prompt": "…"}   # "prompt" only when the log was opened with include_prompt=True

Files: ``requests.jsonl`` is written to; when a line would push it past ``max_bytes`` it becomes
``requests.jsonl.1`` (older ones shift up, beyond ``backups`` they are deleted). Readers take one log, a
folder (every ``*.jsonl`` log in it, e.g. one per scheduler daemon) or a glob of logs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from blockctl.errors import TaggerError
from blockctl.tagger.dataset import Example, prompt_sha256


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One completed request as the scheduler saw it."""

    time: float  # unix seconds at completion
    prompt_tokens: int
    predicted_output_tokens: int | None  # what routing used (None: no prediction)
    output_tokens: int  # tokens actually generated
    model: str
    instance: str
    prompt: str | None = None  # hashed always; the text is written only with include_prompt
    source: str | None = None  # where the prediction came from: "tagger", "hint", "fallback", …
    prompt_sha256: str | None = None  # for callers that only have the hash (ignored when prompt is set)
    status: int | None = None  # the instance's HTTP status
    outcome: str | None = None  # "completed", "client_aborted", "upstream_broken" (scheduler.reqlog)


class RequestLog:
    """Appends records with buffered writes: ``append`` only formats a line in memory.

    The buffer is written (and rotated) when it holds ``flush_bytes`` or its oldest line is
    ``flush_interval_s`` old at the next append, and on ``flush``/``close``. A write is a local append
    of at most ``flush_bytes``, so the event loop is not held up; call ``close`` on shutdown.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 64 << 20,
        backups: int = 5,
        include_prompt: bool = False,
        flush_bytes: int = 64 << 10,
        flush_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 1 or backups < 0:
            raise TaggerError(f"{path}: request log needs max_bytes >= 1 and backups >= 0")
        self.path = Path(path)
        self.max_bytes, self.backups, self.include_prompt = max_bytes, backups, include_prompt
        self.flush_bytes, self.flush_interval_s, self._clock = flush_bytes, flush_interval_s, clock
        self._lines: list[str] = []
        self._buffered = 0
        self._oldest = 0.0
        self._fh: TextIO | None = None
        self._size = 0

    def line(self, record: RequestRecord) -> str:
        """The JSON line written for ``record`` (prompt text only with include_prompt)."""
        digest = prompt_sha256(record.prompt) if record.prompt is not None else record.prompt_sha256
        obj: dict[str, Any] = {
            "time": record.time,
            "prompt_sha256": digest,
            "prompt_tokens": record.prompt_tokens,
            "predicted_output_tokens": record.predicted_output_tokens,
            "output_tokens": record.output_tokens,
            "model": record.model,
            "instance": record.instance,
            "source": record.source,
        }
        if record.status is not None:
            obj["status"] = record.status
        if record.outcome is not None:
            obj["outcome"] = record.outcome
        if self.include_prompt and record.prompt is not None:
            obj["prompt"] = record.prompt
        return json.dumps(obj, ensure_ascii=False) + "\n"

    def append(self, record: RequestRecord) -> None:
        text = self.line(record)
        now = self._clock()
        if not self._lines:
            self._oldest = now
        self._lines.append(text)
        self._buffered += len(text.encode("utf-8"))
        if self._buffered >= self.flush_bytes or now - self._oldest >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        lines, self._lines, self._buffered = self._lines, [], 0
        for text in lines:
            size = len(text.encode("utf-8"))
            fh = self._open()
            if self._size > 0 and self._size + size > self.max_bytes:
                self._rotate()
                fh = self._open()
            fh.write(text)
            self._size += size
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open(self) -> TextIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open_private(self.path) if self.include_prompt else self.path.open("a", encoding="utf-8")
            self._size = self.path.stat().st_size
        return self._fh

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            older = rotated(self.path, i)
            if older.exists():
                older.replace(rotated(self.path, i + 1))
        self.path.replace(rotated(self.path, 1))


def open_private(path: Path) -> TextIO:
    """Open ``path`` for appending with mode 0600 from its creation (a log with prompts is as secret as the
    token); an existing file with wider rights is narrowed before anything is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.name == "posix" and os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def log_files(path: str | Path) -> list[Path]:
    """The log's files, oldest first (``PATH.N`` … ``PATH.1``, ``PATH``)."""
    base = Path(path)
    backups: list[tuple[int, Path]] = []
    for p in base.parent.glob(f"{base.name}.*"):
        suffix = p.name[len(base.name) + 1 :]
        if suffix.isdigit():
            backups.append((int(suffix), p))
    files = [p for _, p in sorted(backups, reverse=True)]
    return [*files, base] if base.exists() else files


def log_bases(path: str | Path) -> list[Path]:
    """The logs PATH names: itself, every ``*.jsonl`` log in a folder, or the logs matching a glob."""
    base = Path(path)
    if base.is_dir():
        names = {p.name.split(".jsonl", 1)[0] + ".jsonl" for p in base.glob("*.jsonl*")}
        return [base / n for n in sorted(names)]
    if any(c in base.name for c in "*?["):
        found = {p.name.rsplit(".", 1)[0] if p.suffix[1:].isdigit() else p.name
                 for p in base.parent.glob(base.name)}
        return [base.parent / n for n in sorted(found)]
    return [base]


def iter_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every well-formed record, oldest first per log; a torn last line (a crash mid-write) is skipped.

    ``path`` is one log, a folder of logs or a glob (see ``log_bases``); rotated files are included.
    """
    files = [f for base in log_bases(path) for f in log_files(base)]
    if not files:
        raise TaggerError(f"{path}: no request log there (nor rotated files {Path(path).name}.N)")
    for file in files:
        with file.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    yield obj


def examples_from_log(path: str | Path) -> list[Example]:
    """Training examples (prompt text → actual output tokens) from the completed requests of a log."""
    out: list[Example] = []
    total = 0
    for obj in iter_log(path):
        total += 1
        prompt, n = obj.get("prompt"), obj.get("output_tokens")
        if obj.get("status", 200) != 200 or obj.get("outcome", "completed") != "completed":
            continue  # failed or cut-short replies would teach too-short lengths
        if isinstance(prompt, str) and prompt.strip() and isinstance(n, int) and n >= 1:
            out.append(Example(prompt, n))
    if not out:
        raise TaggerError(
            f"{path}: {total} requests logged but none with prompt text, so there is nothing to learn from",
            hint="start the schedulers with --log-prompts (RequestLog include_prompt=True)",
        )
    return out
