"""One parse of a request's prompt, made once per request and handed to the tagger, the request log, the
agents' ``/predict`` and the proxy: its text, token ids, the chained block hashes a prefix cache keys it by,
and the token counts of the conversation's earlier replies (length evidence, ``blockctl.predict.history``).

Before this the scheduler flattened and counted a prompt in three places on its hot path. The hashes are
computed for ``BLOCK_SIZE``-token blocks (vLLM's default on GPUs; an agent whose engine uses another block size
finds no hit in them and prices the prompt uncached) and serialised to JSON once, for every agent asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from blockctl.engine.prefixcache import block_hashes
from blockctl.tokens import TokenCounter, earlier_replies, prompt_text, prompt_token_ids

BLOCK_SIZE = 16


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    text: str  # the prompt as text (the flattened chat); "" for token-id prompts
    token_ids: list[int]
    hashes_json: bytes  # the prompt's block hashes as a JSON array, ready to splice into /predict bodies
    replies: tuple[int, ...] = ()  # tokens of each earlier assistant message of a chat, in order

    @property
    def prompt_tokens(self) -> int:
        return len(self.token_ids)


def parse_request(body: Any, counter: TokenCounter, *, count_replies: bool = True) -> ParsedRequest:
    """Text, token ids and block hashes of a completions or chat body; ValueError when it has no prompt.
    ``count_replies=False`` skips counting the earlier replies (a second tokenization of them) for a router
    that has no use for them."""
    ids = prompt_token_ids(body, counter)
    hashes = json.dumps(block_hashes(ids, BLOCK_SIZE), separators=(",", ":")).encode()
    replies = tuple(counter.count(text) for text in earlier_replies(body)) if count_replies else ()
    return ParsedRequest(prompt_text(body), ids, hashes, replies)
