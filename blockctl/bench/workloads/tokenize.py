"""The one place workloads count tokens: blockctl.tokens' default tokenizer, batched for large datasets."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from blockctl.tokens import TIKTOKEN_ENCODING as DEFAULT_TOKENIZER

# NOTE: counts equal ``blockctl.tokens.get_counter().count(text)`` (the scheduler's, agents' and emulator's
# counter: tiktoken with special-token text encoded as plain text); tiktoken's batch call is used because
# tokenizing ShareGPT once takes ~15 s even batched.


@lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding(DEFAULT_TOKENIZER)


def tokenizer_key() -> str:
    """A stable name of the tokenizer in use (part of cache keys)."""
    return DEFAULT_TOKENIZER


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Token counts of ``texts`` (special-token text counts as ordinary text)."""
    enc = _encoding()
    return [len(ids) for ids in enc.encode_ordinary_batch(list(texts))]


def encode(text: str) -> list[int]:
    return list(_encoding().encode_ordinary(text))


def decode(ids: Sequence[int]) -> str:
    return str(_encoding().decode(list(ids)))
