"""How long the emulator's reply to a prompt is when the client does not force it (no ``ignore_eos``).

The natural length is a deterministic function of the prompt alone (not of the seed or the instance), so a
repeated prompt gets the same length everywhere, and part of it is learnable from the text:

    L = round(exp(mu + SIGMA * z)),  clipped to [1, MAX_NATURAL]
    mu = ln(BASE_MEDIAN) + ln(product of the cue factors whose words appear in the prompt text)
    z  = the standard-normal quantile of a BLAKE2b hash of the prompt (text, else its token ids)

The log-normal spread and median follow ShareGPT's reply lengths (median ~200 tokens, long right tail);
``SIGMA`` is the unlearnable part. Cue words (lower-cased, whole words) shift the median, e.g. "essay" or
"implement" lengthen, "briefly" or "yes or no" shorten, so a tagger reading the prompt can do better than
the marginal distribution. The caller then caps the length by ``max_tokens`` and the model length.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from statistics import NormalDist

BASE_MEDIAN = 180.0
SIGMA = 0.6
MAX_NATURAL = 4096

# (factor on the median, cue words); every group that matches multiplies the median once.
CUES: tuple[tuple[float, frozenset[str]], ...] = (
    (2.5, frozenset({"essay", "story", "article", "detailed", "elaborate", "comprehensive", "implement"})),
    (1.8, frozenset({"explain", "write", "code", "describe", "program", "script", "function"})),
    (1.4, frozenset({"list", "steps", "compare", "examples", "plan", "outline"})),
    (0.5, frozenset({"translate", "summarize", "summarise", "rewrite", "rephrase", "define"})),
    (0.2, frozenset({"briefly", "brief", "short", "one-word", "yes-or-no", "tl;dr", "concise"})),
)
_WORD = re.compile(r"[a-z][a-z;\-]*")
_PHRASES = (("yes or no", "yes-or-no"), ("one word", "one-word"), ("in short", "short"))
_NORMAL = NormalDist()


def cue_factor(text: str) -> float:
    """The product of the cue factors whose words occur in ``text``."""
    low = text.lower()
    for phrase, token in _PHRASES:
        low = low.replace(phrase, token)
    words = set(_WORD.findall(low))
    factor = 1.0
    for mult, group in CUES:
        if words & group:
            factor *= mult
    return factor


def _hash_quantile(key: bytes) -> float:
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    u = (h + 0.5) / 2.0**64  # in (0, 1)
    return _NORMAL.inv_cdf(u)


def natural_length(text: str, token_ids: Sequence[int] = ()) -> int:
    """Tokens the emulator replies with to this prompt when nothing stops it earlier (see module doc)."""
    key = text.encode() if text else b"ids:" + ",".join(map(str, token_ids)).encode()
    mu = math.log(BASE_MEDIAN * cue_factor(text))
    return max(1, min(MAX_NATURAL, round(math.exp(mu + SIGMA * _hash_quantile(key)))))


def output_length(natural: int, limit: int, *, ignore_eos: bool, min_tokens: int = 0) -> tuple[int, str]:
    """(tokens to generate, finish_reason): ``limit`` with ignore_eos, else the natural length, capped."""
    if ignore_eos or natural >= limit:
        return limit, "length"
    return max(natural, min(min_tokens, limit)), "stop"
