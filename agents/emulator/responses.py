"""vLLM's OpenAI response bodies for completions and chat: whole responses and SSE chunks, as bytes.

Chunks are built by splicing pre-encoded text into per-request byte templates (one token's chunk costs a
couple of byte joins, not a ``json.dumps``), since the emulator streams one chunk per token per request.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from blockctl.openai_api import Kind

DONE = b"data: [DONE]\n\n"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


class ResponseWriter:
    """Builds one request's response in vLLM's format for ``kind`` ("completions" or "chat")."""

    def __init__(self, kind: Kind, model: str, request_id: str | None = None) -> None:
        self.kind = kind
        self.model = model
        prefix = "cmpl-" if kind == "completions" else "chatcmpl-"
        self.id = request_id or prefix + uuid.uuid4().hex
        self.created = int(time.time())
        obj = "text_completion" if kind == "completions" else "chat.completion.chunk"
        head = _dumps({"id": self.id, "object": obj, "created": self.created, "model": model})[:-1]
        self._head = b"data: " + head.encode() + b',"choices":['
        if kind == "completions":
            self._open = b'{"index":0,"text":"'
            self._close = b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
        else:
            self._open = b'{"index":0,"delta":{"content":"'
            self._close = b'"},"logprobs":null,"finish_reason":null}]}\n\n'

    def token_chunk(self, text_json: bytes) -> bytes:
        """One streamed chunk carrying ``text_json`` (already JSON-escaped, without quotes)."""
        return b"".join((self._head, self._open, text_json, self._close))

    def _chunk(self, choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        obj = "text_completion" if self.kind == "completions" else "chat.completion.chunk"
        body: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                                "choices": choices}
        if extra:
            body.update(extra)
        return b"data: " + _dumps(body).encode() + b"\n\n"

    def role_chunk(self) -> bytes:
        """Chat streams open with the assistant role and empty content (vLLM and OpenAI do)."""
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])

    def finish_chunk(self, text: str, finish_reason: str) -> bytes:
        """The chunk carrying the last token and the finish reason."""
        if self.kind == "completions":
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                      "stop_reason": None}
        else:
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None,
                      "finish_reason": finish_reason, "stop_reason": None}
        return self._chunk([choice])

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """``stream_options.include_usage``: a last chunk with no choices and the usage."""
        return self._chunk([], {"usage": usage(prompt_tokens, completion_tokens)})

    def full(
        self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
    ) -> dict[str, Any]:
        """The whole non-streaming response body."""
        if self.kind == "completions":
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None,
                                      "finish_reason": finish_reason, "stop_reason": None,
                                      "prompt_logprobs": None}
            obj = "text_completion"
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                      "logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
            obj = "chat.completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage(prompt_tokens, completion_tokens)}
