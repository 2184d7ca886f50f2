"""Synthesise prompt text of an exact token count, for length-only workloads sent to an HTTP endpoint."""

from __future__ import annotations

import random
from functools import lru_cache

from blockctl.bench.workloads.tokenize import count_tokens

# Common English words; those that are one token each (with a leading space) under the workload tokenizer
# are kept, so a prompt of n such words is n tokens for cl100k_base (checked and adjusted either way).
_WORDS = (  # noqa: SIM905  (one readable block of words)
    "the of and to in is was for on that with as by at from his her they this have are had not but which "
    "one all were when we there can an your been has more if will so who no out would up what about time "
    "into only some could them other than then now its over also new like two our first any may after most "
    "made where very well back down through years work way many should each people state world still "
    "year long own high under last never might house same part great small place right too while good "
    "water city river light music paper table garden window market summer winter morning evening"
).split()


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    words = [w for w, n in zip(_WORDS, count_tokens([" " + w for w in _WORDS]), strict=True) if n == 1]
    return tuple(words) if len(words) >= 16 else tuple(_WORDS)


def synth_prompt(tokens: int, seed: int) -> str:
    """Text of ``tokens`` tokens under the workload tokenizer (deterministic in ``seed``).

    Words are drawn at random so that prompts do not share a prefix (which would let an engine's prefix
    cache hide the prefill cost the workload means to cause).
    """
    if tokens < 1:
        raise ValueError("tokens must be >= 1")
    vocab = _vocabulary()
    rng = random.Random(seed)
    words = [rng.choice(vocab) for _ in range(tokens)]
    text = " ".join(words)
    for _ in range(8):  # other tokenizers may merge or split words: adjust by the difference
        diff = tokens - count_tokens([text])[0]
        if diff == 0:
            return text
        if diff > 0:
            words.extend(rng.choice(vocab) for _ in range(diff))
        else:
            del words[max(1, len(words) + diff) :]
        text = " ".join(words)
    return text
