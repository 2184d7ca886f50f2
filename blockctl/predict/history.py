"""A conversation's earlier reply lengths as evidence for its next reply's length.

In multi-turn chat every request carries the conversation so far, the model's earlier replies included (the
``assistant`` messages before the last message). How long those replies were says much about how long the
next one will be: over ShareGPT's multi-turn conversations (tiktoken ``cl100k_base``, 18,977 later turns) a
weighted mean of the earlier replies' lengths ranks the next reply's length at Kendall τ 0.45 — about what
the tagger gets from a first prompt (0.49), and more than it can get from a long conversation, whose text it
reads only the first 32 tokens of (the opening request, not the one being answered).

:class:`ReplyHistory` is the calibrated form. A request's *history score* is the geometric mean of its earlier
replies' lengths, each turn back weighing half as much as the one after it (τ 0.45; the last reply alone
0.44, an unweighted mean 0.43). Later turns of training conversations are cut into ``BINS`` quantile bins of
that score, and each bin keeps ``QUANTILES`` quantiles of the next reply's true length: the distribution a
request in that bin is told, its mean the number. ``blockctl train-tagger`` fits it on the conversations of
its train split and keeps it in the tagger's ``config.json`` (``history``), so a router with a tagger uses it
for every request that has earlier replies, and the simulator does the same for multi-turn workloads.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blockctl.errors import TaggerError
from blockctl.predict.lengths import LengthDist, dist

BINS = 8
QUANTILES = 32
DECAY = 0.5  # weight of a reply relative to the one after it


def history_score(replies: Sequence[int]) -> float:
    """The weighted geometric mean of earlier reply lengths (the latest weighs most); replies ≥ 1 token."""
    total = weights = 0.0
    w = 1.0
    for n in reversed(replies):
        total += w * math.log(max(1, n))
        weights += w
        w *= DECAY
    return math.exp(total / weights)


@dataclass(frozen=True, slots=True)
class ReplyHistory:
    """``edges[i]``: the largest history score of bin i (the last bin is open-ended); ``atoms[i]`` its
    distribution of the next reply's length."""

    edges: tuple[float, ...]
    atoms: tuple[tuple[int, ...], ...]
    turns: int = 0  # conversation turns it was fitted on

    def dist(self, replies: Sequence[int]) -> LengthDist | None:
        """The next reply's length distribution after ``replies`` (token counts); None without any."""
        if not replies:
            return None
        i = min(bisect.bisect_left(self.edges, history_score(replies)), len(self.atoms) - 1)
        return dist(self.atoms[i])

    def as_dict(self) -> dict[str, Any]:
        return {"rule": "next reply's length by the weighted geometric mean of the earlier replies' lengths",
                "decay": DECAY, "turns": self.turns, "edges": list(self.edges),
                "quantiles": [list(a) for a in self.atoms]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ReplyHistory | None:
        """None for an empty mapping (a tagger saved without one)."""
        if not raw:
            return None
        try:
            edges = tuple(float(e) for e in raw["edges"])
            atoms = tuple(tuple(int(a) for a in q) for q in raw["quantiles"])
            turns = int(raw.get("turns", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise TaggerError(f"history: expected edges and quantiles lists ({exc})") from None
        if len(atoms) != len(edges) + 1 or list(edges) != sorted(edges) or not all(atoms) or \
                any(a < 1 for q in atoms for a in q):
            raise TaggerError("history: need sorted edges and one non-empty list of positive lengths per bin")
        return cls(edges, atoms, turns)


def fit_history(conversations: Iterable[Sequence[int]], bins: int = BINS) -> ReplyHistory:
    """Fit on conversations given as their reply lengths in order (each later turn is one example);
    TaggerError when there are fewer later turns than bins."""
    from blockctl.tagger.calibration import length_quantiles

    pairs = sorted((history_score(replies[:k]), max(1, replies[k]))
                   for replies in conversations for k in range(1, len(replies)))
    if len(pairs) < bins:
        raise TaggerError(f"history: {len(pairs)} later conversation turns, need at least {bins}")
    n = len(pairs)
    edges: list[float] = []
    for k in range(1, bins):
        edge = pairs[k * n // bins - 1][0]  # the last score of the k-th quantile bin; equal scores share a bin
        if (not edges or edge > edges[-1]) and edge < pairs[-1][0]:
            edges.append(edge)
    members: list[list[int]] = [[] for _ in range(len(edges) + 1)]
    for score, length in pairs:
        members[bisect.bisect_left(edges, score)].append(length)
    return ReplyHistory(tuple(edges), tuple(length_quantiles(m, QUANTILES) for m in members), n)
