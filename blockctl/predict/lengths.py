"""A request's output length as a distribution, and what its age says about the rest.

A length prediction is a :class:`LengthDist`: equally likely *atoms* (the distribution's quantiles at
probabilities (i + ½)/K), e.g. the true lengths of held-out prompts the tagger tagged alike, calibrated on
held-out data. A single number is the one-atom distribution (exact: the true length, or ``ignore_eos`` with
``max_tokens``).

For a request that has produced ``p`` tokens, the what-if runs it to ``p`` + the expected remainder
E[L − p | L > p] over the atoms above ``p`` (:meth:`LengthDist.expected_total`): under a heavy tail, a reply
that has already run long is likely to run longer, where one number (run to the prediction, then a fixed
overrun) would call it almost done. Past the last atom the distribution has nothing to say, and the overrun
rule of ``tracker.assumed_total_output`` applies, as it does for a one-atom prediction. A policy may instead
ask for a quantile of the remaining length (:meth:`LengthDist.quantile_total`).

``DEFAULT_QUANTILES`` is the prior when nothing is known about a request but a typical length: the reply
lengths of the ``sharegpt`` workload's prompts in the tagger's train split (12,361 replies, tiktoken
``cl100k_base``; mean 201, median 134), scaled to the mean that was given (:func:`prior`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

# 32 quantiles of ShareGPT reply lengths at probabilities (i + 0.5) / 32, train split (see module docstring).
DEFAULT_QUANTILES: tuple[int, ...] = (
    5, 7, 9, 12, 14, 17, 20, 24, 28, 35, 43, 54, 69, 85, 104, 124,
    146, 171, 193, 215, 237, 257, 278, 302, 325, 351, 380, 417, 469, 543, 645, 769,
)
MAX_ATOMS = 64
QUANTILES_HEADER = "x-blockctl-predicted-output-quantiles"  # a length's atoms, router → agent (format_atoms)


@dataclass(frozen=True, slots=True)
class LengthDist:
    """Equally likely output lengths, sorted (build with :func:`dist`, which caches and validates)."""

    atoms: tuple[int, ...]
    _suffix: tuple[int, ...] = field(repr=False, compare=False)  # _suffix[j] = sum(atoms[j:])

    @property
    def mean(self) -> float:
        return self._suffix[0] / len(self.atoms)

    @property
    def exact(self) -> bool:
        return len(self.atoms) == 1

    def expected_total(self, produced: int) -> int | None:
        """``produced`` + E[L − produced | L > produced], rounded up; None when no atom is above it."""
        atoms = self.atoms
        j = bisect.bisect_right(atoms, produced)
        n = len(atoms) - j
        if n == 0:
            return None
        return math.ceil(self._suffix[j] / n)

    def draw_total(self, produced: int, u: float) -> int | None:
        """A total length drawn from the atoms above ``produced`` (``u`` uniform in [0, 1)); None when none is."""
        atoms = self.atoms
        j = bisect.bisect_right(atoms, produced)
        n = len(atoms) - j
        return None if n == 0 else atoms[j + min(n - 1, int(u * n))]

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, linear between atoms (atom i sits at probability (i + ½)/K)."""
        atoms = self.atoms
        k = len(atoms)
        x = q * k - 0.5
        if x <= 0:
            return float(atoms[0])
        if x >= k - 1:
            return float(atoms[-1])
        i = int(x)
        return atoms[i] + (x - i) * (atoms[i + 1] - atoms[i])

    def quantile_total(self, q: float, produced: int) -> int | None:
        """The ``q`` quantile of L given L > ``produced`` (the atoms above it); None when none is."""
        atoms = self.atoms
        j = bisect.bisect_right(atoms, produced)
        if j == len(atoms):
            return None
        return math.ceil(dist(atoms[j:]).quantile(q))


@lru_cache(maxsize=4096)
def _make(atoms: tuple[int, ...]) -> LengthDist:
    suffix = [0] * len(atoms)
    acc = 0
    for i in range(len(atoms) - 1, -1, -1):
        acc += atoms[i]
        suffix[i] = acc
    return LengthDist(atoms, tuple(suffix))


def dist(atoms: Sequence[int]) -> LengthDist:
    """A distribution over ``atoms`` (each ≥ 1 token; sorted here); one atom is an exact length."""
    key = tuple(sorted(max(1, int(a)) for a in atoms))
    if not key:
        raise ValueError("a length distribution needs at least one atom")
    return _make(key)


def exact(tokens: int) -> LengthDist:
    return dist((tokens,))


def prior(mean: float, shape: Sequence[int] = DEFAULT_QUANTILES) -> LengthDist:
    """``shape`` scaled to ``mean``: what a typical length alone says about one request."""
    if shape is DEFAULT_QUANTILES:
        return _default_prior(mean)  # per request on the scheduler's and the agent's hot paths
    scale = mean / (sum(shape) / len(shape))
    return dist([max(1, round(a * scale)) for a in shape])


@lru_cache(maxsize=4096)
def _default_prior(mean: float) -> LengthDist:
    scale = mean / (sum(DEFAULT_QUANTILES) / len(DEFAULT_QUANTILES))
    return dist([max(1, round(a * scale)) for a in DEFAULT_QUANTILES])


@lru_cache(maxsize=4096)
def parse_atoms(text: str) -> LengthDist:
    """``"12,30,55"`` (the ``x-blockctl-predicted-output-quantiles`` header) → a distribution;
    ValueError when it is not 1 to ``MAX_ATOMS`` positive whole numbers."""
    parts = [p for p in text.split(",") if p.strip()]
    if not 1 <= len(parts) <= MAX_ATOMS:
        raise ValueError(f"expected 1 to {MAX_ATOMS} comma-separated token counts")
    atoms = [int(p) for p in parts]
    if any(a < 1 for a in atoms):
        raise ValueError("token counts must be at least 1")
    return dist(atoms)


def format_atoms(d: LengthDist) -> str:
    return _format(d.atoms)


@lru_cache(maxsize=4096)
def _format(atoms: tuple[int, ...]) -> str:
    return ",".join(str(a) for a in atoms)


def told_length(
    quantiles: str | None, *, default: int, hinted: bool, ignore_eos: bool, limit: int | None
) -> LengthDist | None:
    """The distribution an agent keeps for a request it was told ``predicted`` tokens for (None: exact).

    The ``x-blockctl-predicted-output-quantiles`` header (``quantiles``) wins. Else a length the router
    sent (``hinted``: its tagger's mean or the client's hint) or ``ignore_eos`` with ``max_tokens`` (the
    length is then known) is taken as exact, the stronger evidence; with neither, the agent's fallback
    ``default`` says nothing about this request, so it is the :func:`prior` at that mean (``max_tokens``
    caps it where it runs).
    ValueError for a malformed header."""
    if quantiles is not None:
        return parse_atoms(quantiles)
    if hinted or (ignore_eos and limit is not None):
        return None
    return prior(default)
