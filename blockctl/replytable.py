"""The workload's own reply lengths for an emulated cluster: a table keyed by a hash of each prompt.

A live benchmark must not tell the router how long each reply will be (no ``max_tokens`` = true length with
``ignore_eos``, no length header), yet the emulated engines must reply with the workload's lengths, as a real
model answers a dataset prompt with about its recorded reply. So the benchmark writes this table before the
cluster starts (``blockctl bench reply-lengths``), ``blockctl up --local --reply-lengths FILE`` hands it to
the emulators, and nothing gives it to the schedulers or the agents: the router predicts lengths as in
production (tagger, else the fallback).

Key: the BLAKE2b-128 hex digest of the prompt text as the client wrote it (a completions ``prompt`` string,
the text of a chat's last message, or for a chat with earlier replies (assistant messages) the whole
conversation flattened as ``blockctl.tokens`` flattens it: a multi-turn chat's last user turn, "continue",
repeats across conversations). Prompts given as token ids are not keyed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from blockctl.errors import ConfigError

FORMAT = "blockctl-reply-lengths/1"


def prompt_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def client_prompt(body: Any) -> str | None:
    """The text a table is keyed by: the ``prompt`` string, a chat's last message's text, or, for a chat with
    earlier replies, the whole conversation flattened; else None."""
    def get(key: str) -> Any:
        return body.get(key) if isinstance(body, Mapping) else getattr(body, key, None)

    messages = get("messages")
    if messages:
        from blockctl.tokens import earlier_replies, flatten_messages

        try:
            if earlier_replies(body):
                return flatten_messages(messages)
        except (TypeError, ValueError, AttributeError):
            return None
    if messages:
        last = messages[-1]
        content = last.get("content") if isinstance(last, Mapping) else getattr(last, "content", None)
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # content parts: their text, as blockctl.tokens joins it
            parts = [p.get("text") if isinstance(p, Mapping) else getattr(p, "text", None) for p in content]
            return "\n".join(p for p in parts if isinstance(p, str))
        return None
    prompt = get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else None


def build(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """``(prompt text, reply tokens)`` pairs -> the table (a repeated prompt keeps its first length)."""
    table: dict[str, int] = {}
    for text, tokens in pairs:
        table.setdefault(prompt_key(text), max(1, int(tokens)))
    return table


def save(path: Path, table: Mapping[str, int], *, source: Mapping[str, Any]) -> None:
    doc = {"format": FORMAT, "source": dict(source), "lengths": dict(table)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", source=str(path)) from exc


def load(path: str | Path) -> dict[str, int]:
    """The table in ``path``; ConfigError naming the file when it is missing or not such a table."""
    p = Path(path).expanduser()
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(p), key="reply-lengths") from exc
    except ValueError as exc:
        raise ConfigError(f"not JSON: {exc}", source=str(p), key="reply-lengths") from exc
    lengths = doc.get("lengths") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
    if not isinstance(lengths, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in lengths.items()
    ):
        raise ConfigError(f"not a reply-length table ({FORMAT}): write one with `blockctl bench reply-lengths`",
                          source=str(p), key="reply-lengths")
    return lengths
