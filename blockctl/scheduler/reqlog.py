"""The daemon's side of the request log: count each reply's output tokens as it is relayed, then log it.

Counting (cheap: it runs on every relayed chunk):

- non-streamed replies: ``usage.completion_tokens`` of the JSON body (0 when absent);
- streamed replies (SSE, events separated by a blank line ``\\n\\n``): the ``data:`` events that carry
  generated text, i.e. the first choice's ``text`` (completions) or ``delta.content`` (chat) is a non-empty
  string. ``[DONE]``, the chat role-only chunk, empty-text finish/abort chunks and the usage-only chunk are
  not counted. When a chunk carries ``usage.completion_tokens`` (``stream_options.include_usage``), that
  figure wins. A compact ``"text":"x`` / ``"content":"x`` is recognised without parsing; other events are
  parsed with ``json``.

What is logged: every request an instance answered (one line at completion), with ``status`` = the
instance's HTTP status and ``outcome`` = ``completed`` | ``client_aborted`` (the client went away mid-stream;
output_tokens counts what was relayed) | ``upstream_broken`` (the instance broke the stream off). Requests no
instance answered (400 before routing, 413, 503 no instance, 502 every instance failed) are not logged:
they have no instance and no output; the daemon's /metrics counts them. Only ``completed`` 200 lines are
used for retraining (``blockctl.tagger.requestlog.examples_from_log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockctl.tagger.requestlog import RequestLog, RequestRecord

_USAGE = b'"completion_tokens"'
_TEXT_MARKS = (b'"text":"', b'"content":"')
_MAX_TAIL = 1 << 20  # an unterminated event larger than this is dropped (not SSE as expected)


def completion_tokens(body: bytes) -> int | None:
    """``usage.completion_tokens`` of a JSON reply body, or None."""
    at = body.rfind(_USAGE)
    if at < 0:
        return None
    rest = body[at + len(_USAGE):at + len(_USAGE) + 32].lstrip(b" \t\r\n")
    if rest[:1] == b":":
        digits = rest[1:].lstrip(b" \t\r\n")
        end = 0
        while end < len(digits) and 48 <= digits[end] <= 57:
            end += 1
        if end:
            return int(digits[:end])
    try:  # unusual spacing: parse it properly
        usage = json.loads(body).get("usage")
        value = usage.get("completion_tokens") if isinstance(usage, dict) else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _event_text(obj: Any) -> bool:
    """Whether a parsed SSE chunk carries generated text in its first choice."""
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    text = choice.get("text")
    if text is None and isinstance(choice.get("delta"), dict):
        text = choice["delta"].get("content")
    return isinstance(text, str) and text != ""


class StreamTokens:
    """Counts the generated-text events of an SSE reply fed chunk by chunk (see the module docstring)."""

    __slots__ = ("_tail", "events", "usage")

    def __init__(self) -> None:
        self._tail = b""
        self.events = 0
        self.usage: int | None = None

    @property
    def tokens(self) -> int:
        return self.usage if self.usage is not None else self.events

    def feed(self, chunk: bytes) -> None:
        if self._tail:
            chunk, self._tail = self._tail + chunk, b""
        start, find = 0, chunk.find
        while (end := find(b"\n\n", start)) >= 0:
            if chunk.startswith(b"data:", start, end) and not self._text_event(chunk, start, end):
                self._parse(chunk[start + 5:end].strip())
            start = end + 2
        if start < len(chunk) and len(chunk) - start <= _MAX_TAIL:
            self._tail = chunk[start:]

    def _text_event(self, data: bytes, start: int, end: int) -> bool:
        """The fast path, without copying or parsing: a compact non-empty text field (and no usage)."""
        if data.find(_USAGE, start, end) >= 0:
            return False
        for mark in _TEXT_MARKS:
            at = data.find(mark, start, end)
            if at >= 0:
                at += len(mark)
                if at < end and data[at] != 34:  # 34: a closing quote right away means empty text
                    self.events += 1
                    return True
                return False
        return False

    def _parse(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if _event_text(obj):
            self.events += 1
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage = usage["completion_tokens"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one forwarded request ended, as the relay saw it."""

    instance: str
    status: int
    output_tokens: int
    outcome: str  # completed | client_aborted | upstream_broken


Done = Callable[[Outcome], None]


@dataclass(frozen=True, slots=True)
class RequestLogSettings:
    path: Path
    max_bytes: int = 64 << 20
    backups: int = 5
    include_prompt: bool = False


class RequestLogger:
    """One daemon's request log: builds records and flushes the buffered log at least every second."""

    FLUSH_EVERY_S = 1.0

    def __init__(self, settings: RequestLogSettings) -> None:
        self.log = RequestLog(settings.path, max_bytes=settings.max_bytes, backups=settings.backups,
                              include_prompt=settings.include_prompt, flush_interval_s=self.FLUSH_EVERY_S)
        self.include_prompt = settings.include_prompt
        self._task: asyncio.Task[None] | None = None

    def done(self, *, prompt: str, prompt_tokens: int, predicted: int, source: str, model: str) -> Done:
        """The callback the relay calls once when the request ends.

        The line is formatted on the loop's next turn (``call_soon``), so it does not delay the reply.
        """

        def append(o: Outcome, at: float) -> None:
            self.log.append(RequestRecord(
                time=at, prompt_tokens=prompt_tokens, predicted_output_tokens=predicted,
                output_tokens=o.output_tokens, model=model, instance=o.instance, prompt=prompt,
                source=source, status=o.status, outcome=o.outcome,
            ))

        def record(o: Outcome) -> None:
            try:
                asyncio.get_running_loop().call_soon(append, o, time.time())
            except RuntimeError:  # no loop (a relay finalised at shutdown): write now
                append(o, time.time())

        return record

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flusher())

    async def _flusher(self) -> None:
        while True:  # so the last lines reach the file when traffic stops, not only at the next append
            await asyncio.sleep(self.FLUSH_EVERY_S)
            self.log.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.log.close()
