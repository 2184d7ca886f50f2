"""Synthetic output text: one vocabulary word per generated token, deterministic per request."""

from __future__ import annotations

import json

_WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if so no will more can its out
into time only new some could these two may first then do any like my now over such our man me even
most made after also did many before must through back years where much your way well down should
because each just those people how too little state good very make world still own see men work long
get here between both life being under never day same another know while last might us great old
year off come since against go came right used take three states himself few house use during
without again place around however home small found thought went say part once general high upon
school every
"""
VOCAB: tuple[str, ...] = tuple(_WORDS.split())
# Each word as a JSON string fragment with its leading space, ready to splice into a chunk.
VOCAB_JSON: tuple[bytes, ...] = tuple(json.dumps(" " + w).encode()[1:-1] for w in VOCAB)


def word_index(request_salt: int, i: int) -> int:
    """The vocabulary index of token ``i`` of the request whose salt is ``request_salt``."""
    return (request_salt + i * 7 + (i * i) // 3) % len(VOCAB)


def render(request_salt: int, start: int, stop: int) -> str:
    """The text of tokens ``start .. stop-1``."""
    return "".join(" " + VOCAB[word_index(request_salt, i)] for i in range(start, stop))


def token_json(request_salt: int, i: int) -> bytes:
    """Token ``i`` already escaped for the inside of a JSON string (the streaming hot path)."""
    return VOCAB_JSON[(request_salt + i * 7 + (i * i) // 3) % len(VOCAB)]


def render_json(request_salt: int, start: int, stop: int) -> bytes:
    """Like ``render`` but already escaped for the inside of a JSON string."""
    return b"".join(VOCAB_JSON[word_index(request_salt, i)] for i in range(start, stop))
