"""Count generated tokens in an OpenAI-style SSE stream as it passes through, without altering it.

One content chunk = one token (vLLM and the emulator emit one chunk per token). Not counted: the chat role
chunk (``delta.role``), a trailing empty chunk that only carries ``finish_reason``, the usage-only chunk, and
``[DONE]``. The usage chunk (``stream_options.include_usage``) gives the exact total at the end.
"""

from __future__ import annotations

import json
from typing import Any

MAX_EVENT_BYTES = 1 << 20


def _is_token_chunk(event: dict[str, Any]) -> bool:
    choices = event.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    finished = choice.get("finish_reason") is not None
    if "text" in choice:
        text = choice["text"]
        return isinstance(text, str) and (text != "" or not finished)
    delta = choice.get("delta")
    if not isinstance(delta, dict) or "role" in delta:
        return False
    content = delta.get("content")
    return isinstance(content, str) and (content != "" or not finished)


class SseTokenCounter:
    """Feed raw upstream bytes in any split; ``feed`` returns how many token chunks completed in them."""

    def __init__(self) -> None:
        self._buf = b""
        self.usage_completion_tokens: int | None = None
        self.error: str | None = None
        self.done = False  # ``data: [DONE]`` went through: the stream is complete, whatever follows

    def feed(self, data: bytes) -> int:
        self._buf += data.replace(b"\r\n", b"\n")
        tokens = 0
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                if len(self._buf) > MAX_EVENT_BYTES:  # not SSE after all: stop buffering it
                    self._buf = b""
                break
            raw, self._buf = self._buf[:end], self._buf[end + 2 :]
            tokens += self._event(raw)
        return tokens

    def _event(self, raw: bytes) -> int:
        for line in raw.replace(b"\r", b"").split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return 0
            if not payload:
                return 0
            try:
                event = json.loads(payload)
            except ValueError:
                return 0
            if not isinstance(event, dict):
                return 0
            if "error" in event:
                err = event["error"]
                self.error = str(err.get("message", err) if isinstance(err, dict) else err)
                return 0
            usage = event.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                self.usage_completion_tokens = usage["completion_tokens"]
            return 1 if _is_token_chunk(event) else 0
        return 0
