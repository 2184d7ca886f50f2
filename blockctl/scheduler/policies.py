"""Routing policies: pure choices of one instance from plain per-instance views, registered by name.

Every policy has the same contract, used by the scheduler daemon and the cluster simulator alike:

1. ``sample(instances, rng)`` says which instances to ask (all of them, or k random ones for block-po2/pok);
2. the caller asks those instances (``/predict`` when ``needs_prediction``, ``/load`` when ``needs_load``,
   nothing otherwise), building one :class:`InstanceView` per answer; for ``needs_prediction`` policies the
   predictions are made with ``prediction_length(request)`` output tokens (the true length for ``oracle``);
3. ``choose(request, views, rng)`` returns the name of one of ``views``.

NOTE: ties are broken by ``rng.choice`` over the tied views sorted by name, so a seeded rng gives the same
choice every time. Predictions within ``PREDICTION_TIE_S`` of the best count as tied: on idle instances the
agents' calibrations differ by microseconds, which must not send every request to one instance.
Predictive policies skip views whose ``prediction`` is None; when no view has one they fall back to
least-outstanding (the best non-predictive signal every view carries). Round-robin's counter is the only
state any policy holds.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from blockctl.engine.types import Prediction
from blockctl.errors import ClusterError, ConfigError
from blockctl.predict.lengths import LengthDist
from blockctl.predict.tracker import RECENT_WINDOW_S


@dataclass(frozen=True, slots=True)
class RouteRequest:
    prompt_tokens: int
    predicted_output_tokens: int
    true_output_tokens: int | None = None  # known only in simulation / oracle experiments
    length: LengthDist | None = None  # the predicted length as a distribution, when the tagger gives one
    prefix: bytes = b""  # the prompt's block hashes as a JSON array (scheduler/parsed.py), sent to /predict


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What one agent reports (or the simulator computes) about one instance at routing time."""

    instance: str
    prediction: Prediction | None  # what-if for this request; None when not asked or no answer
    running: int
    waiting: int
    outstanding: int  # requests sent to the instance and not yet answered in full
    kv_free_blocks: int
    kv_total_blocks: int
    waiting_prompt_blocks: int  # KV blocks the waiting requests' prompts will need (Llumnix freeness)
    recent_requests: int  # requests the instance received in the last 60 s (min-qpm)
    prefix_hit_tokens: int = 0  # tokens of this request's prompt the instance's prefix cache holds
    block_size: int = 16  # the instance's KV block size (tokens)


def blank_view(instance: str) -> InstanceView:
    """A view carrying no load information, for policies that ask nothing (``needs_load`` False)."""
    return InstanceView(instance, None, 0, 0, 0, 0, 0, 0, 0)


PREDICTION_TIE_S = 0.001  # predicted latencies closer than this are a tie (well below any prediction's error)


def _pick(
    views: Sequence[InstanceView], key: Callable[[InstanceView], float], rng: random.Random,
    tolerance: float = 0.0,
) -> str:
    """Name of the view with the least ``key``; ties (within ``tolerance`` of the least) broken by ``rng`` over
    names in sorted order."""
    if not views:
        raise ClusterError("no instance to route to", hint="blockctl status")
    best = min(key(v) for v in views) + tolerance
    tied = sorted(v.instance for v in views if key(v) <= best)
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def _least_outstanding(v: InstanceView) -> float:
    return float(v.outstanding)


class Policy(ABC):
    name: ClassVar[str]  # registry key: the same on the CLI, in config, in results
    needs_prediction: ClassVar[bool] = False  # ask agents /predict (else /load)
    needs_load: ClassVar[bool] = True  # False: the views may be blank (see blank_view)
    needs_prefix: ClassVar[bool] = False  # True: the views need ``prefix_hit_tokens`` (/load is asked with it)

    def sample(self, instances: Sequence[str], rng: random.Random) -> list[str]:
        """Which instances to ask about this request: all of them by default."""
        return list(instances)

    length_quantile: ClassVar[float | None] = None  # ask for this quantile of the length, not its mean

    def prediction_length(self, request: RouteRequest) -> int:
        """Output length to ask predictions for: the predicted one (oracle overrides with the true one), or
        the ``length_quantile`` of its distribution when the policy asks for one and the request has one."""
        q = self.length_quantile
        if q is not None and request.length is not None:
            return max(1, math.ceil(request.length.quantile(q)))
        return request.predicted_output_tokens

    @abstractmethod
    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        """Name of the instance (one of ``views``) that gets ``request``."""


class _Predictive(Policy):
    """Least predicted value of a :class:`Prediction` field (plus ``_miss_cost`` where ``counts_misses``);
    least-outstanding when nobody predicted."""

    needs_prediction = True

    @staticmethod
    def metric(p: Prediction) -> float:
        return p.e2e_s

    counts_misses: ClassVar[bool] = True  # add what a prefix-cache miss costs the instance's other requests

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        predicted = [v for v in views if v.prediction is not None]
        if not predicted:
            return _pick(views, _least_outstanding, rng)
        metric = self.metric
        best_hit = max(v.prefix_hit_tokens for v in predicted)
        if best_hit and self.counts_misses:
            return _pick(predicted, lambda v: metric(v.prediction) + _miss_cost(request, v, best_hit)
                         if v.prediction else math.inf, rng, PREDICTION_TIE_S)
        return _pick(predicted, lambda v: metric(v.prediction) if v.prediction else math.inf, rng,
                     PREDICTION_TIE_S)


def _miss_cost(request: RouteRequest, v: InstanceView, best_hit: int) -> float:
    """Seconds of delay a prefix-cache miss on ``v`` adds to everyone else there (0 when no instance holds more
    of the prompt than ``v``).

    Another instance holds ``best_hit`` tokens of the prompt; on ``v`` the ``best_hit - hit`` tokens it lacks
    cost twice. Compute: ``v`` spends their prefill time (``prefill_s`` per uncached token, from its own
    profile) on work that need not be done. Memory: their KV blocks, a duplicate of what the other instance
    caches, are held for the whole request, a share of ``v``'s KV for its predicted E2E: capacity-seconds
    the instance cannot give to other requests. Either pushes back every request on ``v`` until its queue
    next empties: those running or waiting now, and those that arrive while the new request is there (the
    instance's recent arrival rate times the new request's predicted E2E). The new request's own latency
    already counts its hit, so this is the part the greedy choice leaves out (measured in the README:
    without the memory part block kept about half the affinity routers' hit rate near saturation).
    """
    p = v.prediction
    missed = best_hit - v.prefix_hit_tokens
    if p is None or missed <= 0:
        return 0.0
    delayed = v.running + v.waiting + v.recent_requests / RECENT_WINDOW_S * p.e2e_s
    compute = p.prefill_s * missed / max(1, request.prompt_tokens - v.prefix_hit_tokens)
    memory = p.e2e_s * missed / v.block_size / v.kv_total_blocks if v.kv_total_blocks else 0.0
    return delayed * (compute + memory)


class Block(_Predictive):
    """Block: the least predicted end-to-end latency of the new request, plus, where another instance holds
    more of its prompt in its prefix cache, what the miss would cost the requests already there."""

    name = "block"


class BlockTTFT(_Predictive):
    """Block variant: the least predicted time to first token."""

    name = "block-ttft"
    counts_misses = False  # the others' first tokens are not this request's to weigh

    @staticmethod
    def metric(p: Prediction) -> float:
        return p.ttft_s


class BlockP90(Block):
    """Block, cautious: the least predicted E2E with the new request at the P90 of its length distribution
    (in-flight requests still at their expected remainder)."""

    name = "block-p90"
    length_quantile = 0.9


class BlockPoK(_Predictive):
    """Power of k choices: ask k random instances, then the least predicted E2E among them."""

    name = "block-pok"
    default_k: ClassVar[int] = 3

    def __init__(self, k: int | None = None) -> None:
        self.k = self.default_k if k is None else k
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, got {self.k}", key="k")

    def sample(self, instances: Sequence[str], rng: random.Random) -> list[str]:
        if len(instances) <= self.k:
            return list(instances)
        return rng.sample(list(instances), self.k)


class BlockPo2(BlockPoK):
    """Power of two choices: block-pok with k = 2."""

    name = "block-po2"
    default_k = 2


class Oracle(Block):
    """Block with the workload's true output lengths (experiments only): predictions use the true length."""

    name = "oracle"

    def prediction_length(self, request: RouteRequest) -> int:
        if request.true_output_tokens is None:
            return request.predicted_output_tokens
        return request.true_output_tokens


class RoundRobin(Policy):
    """Cycle through the instances in name order; the counter survives changes of the instance list."""

    name = "round-robin"
    needs_load = False

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        if not views:
            raise ClusterError("no instance to route to", hint="blockctl status")
        names = sorted(v.instance for v in views)
        chosen = names[self._next % len(names)]
        self._next += 1
        return chosen


class RandomChoice(Policy):
    """Uniformly random instance."""

    name = "random"
    needs_load = False

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        return _pick(views, lambda v: 0.0, rng)


class LeastOutstanding(Policy):
    """Fewest requests sent and not yet answered."""

    name = "least-outstanding"

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        return _pick(views, _least_outstanding, rng)


class MinQPM(Policy):
    """Fewest requests received in the last 60 s."""

    name = "min-qpm"

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        return _pick(views, lambda v: float(v.recent_requests), rng)


def llumnix_freeness(v: InstanceView) -> float:
    """Llumnix's dispatch freeness (its ``remaining_steps`` load metric, negated).

    (free KV blocks − blocks the queued prompts need) / (running + waiting requests): how many more decode
    steps the instance can give every request before it runs out of KV cache. Queued requests count with
    their prompt's blocks, as Llumnix counts their "virtual usage" when dispatching. An instance with no
    request is infinitely free.
    """
    n = v.running + v.waiting
    if n == 0:
        return math.inf
    return (v.kv_free_blocks - v.waiting_prompt_blocks) / n


class Llumnix(Policy):
    """Llumnix-style dispatch: the greatest freeness (see :func:`llumnix_freeness`)."""

    name = "llumnix"

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        return _pick(views, lambda v: -llumnix_freeness(v), rng)


class INFaaS(Policy):
    """INFaaS-style: the most free KV blocks per running request (an idle instance is infinitely free)."""

    name = "infaas"

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        return _pick(views, lambda v: -(v.kv_free_blocks / v.running if v.running else math.inf), rng)


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        Block, BlockTTFT, BlockP90, BlockPo2, BlockPoK, RoundRobin, RandomChoice, LeastOutstanding, MinQPM, Llumnix,
        INFaaS, Oracle,
    )
}


def _register_prefix_policies() -> None:
    """The prefix-aware baselines live in their own module (it imports this one)."""
    from blockctl.scheduler.prefix_policies import CacheAware, KvCost, PrefixLoad

    for cls in (CacheAware, PrefixLoad, KvCost):
        POLICIES[cls.name] = cls


_register_prefix_policies()


def make_policy(name: str, **params: Any) -> Policy:
    """A fresh policy by registry name; params whose value is None are ignored (e.g. ``k`` left unset)."""
    cls = POLICIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown policy '{name}'; valid: {', '.join(POLICIES)}", key="policy")
    given = {k: v for k, v in params.items() if v is not None}
    try:
        return cls(**given)
    except TypeError:
        raise ConfigError(
            f"policy '{name}' takes no parameter(s) {', '.join(sorted(given))}", key="policy"
        ) from None
