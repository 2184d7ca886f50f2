"""The built-in ``sharegpt`` workload: real prompts and reply lengths, filtered as vLLM does, cached."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from blockctl.bench.sharegpt import conversation_pair, dataset_file, iter_json_array
from blockctl.bench.workloads.tokenize import count_tokens, tokenizer_key
from blockctl.bench.workloads.types import WorkItem
from blockctl.errors import WorkloadError

# vLLM benchmarks/benchmark_dataset.py (is_valid_sequence): drop pairs with a prompt or reply under 4 tokens,
# a prompt over 1024 tokens, or prompt + reply over 2048 tokens.
MIN_TOKENS = 4
MAX_PROMPT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048
_CACHE_VERSION = 1


def keep(prompt_tokens: int, output_tokens: int) -> bool:
    """vLLM's ShareGPT filter."""
    return (
        prompt_tokens >= MIN_TOKENS
        and output_tokens >= MIN_TOKENS
        and prompt_tokens <= MAX_PROMPT_TOKENS
        and prompt_tokens + output_tokens <= MAX_TOTAL_TOKENS
    )


def cache_dir() -> Path:
    """``$BLOCKCTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/blockctl``, else ``~/.cache/blockctl``."""
    explicit = os.environ.get("BLOCKCTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blockctl"


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenize_pairs(pairs: Iterable[tuple[str, str]]) -> list[WorkItem]:
    """Count tokens of (prompt, reply) pairs and keep those vLLM's filter keeps, in order."""
    pairs = list(pairs)
    p_counts = count_tokens([p for p, _ in pairs])
    o_counts = count_tokens([r for _, r in pairs])
    return [
        WorkItem(prompt=p, prompt_tokens=pt, output_tokens=ot)
        for (p, _), pt, ot in zip(pairs, p_counts, o_counts, strict=True)
        if keep(pt, ot)
    ]


def load_sharegpt_file(path: Path, *, use_cache: bool = True) -> list[WorkItem]:
    """All usable (filtered) ShareGPT items of ``path`` in file order, from the on-disk cache when valid.

    The cache is keyed by the file's content hash and the tokenizer, so editing the file or switching
    tokenizers rebuilds it. A corrupt cache file is rebuilt silently.
    """
    key = f"sharegpt-v{_CACHE_VERSION}-{file_digest(path)}-{tokenizer_key()}.json"
    cached = cache_dir() / key
    if use_cache and cached.is_file():
        try:
            rows = json.loads(cached.read_text(encoding="utf-8"))
            return [WorkItem(prompt=r[0], prompt_tokens=int(r[1]), output_tokens=int(r[2])) for r in rows]
        except (OSError, ValueError, TypeError, IndexError):
            pass
    pairs = [pair for _line, v in iter_json_array(path) if (pair := conversation_pair(v)) is not None]
    items = tokenize_pairs(pairs)
    if not items:
        raise WorkloadError(f"{path}: no conversation passes the length filter (prompt, reply >= 4 tokens)")
    if use_cache:
        _write_atomic(cached, json.dumps([[i.prompt, i.prompt_tokens, i.output_tokens] for i in items]))
    return items


def load_builtin_sharegpt() -> list[WorkItem]:
    return load_sharegpt_file(dataset_file())


def _write_atomic(path: Path, text: str) -> None:
    """Best effort: a cache that cannot be written only costs time on the next run."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
