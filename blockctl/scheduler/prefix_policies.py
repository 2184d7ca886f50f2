"""The prefix-aware routers blockctl competes with, as policies named after what they do.

Each one sees, per instance, ``prefix_hit_tokens``: how many tokens of the request's prompt the instance's
prefix cache holds (vLLM's own rule: whole blocks, the last token never). That is the *precise* signal (Dynamo
and llm-d's "precise" mode build it from the engines' KV events; SGLang's router approximates it with a radix
tree of what it routed), so these baselines are given at least as much as they have in production.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from blockctl.scheduler.policies import InstanceView, Policy, RouteRequest, _pick


class CacheAware(Policy):
    """SGLang router's ``cache_aware`` policy (sgl-router / sgl-model-gateway, its CLI defaults):

    - load = requests the router has outstanding on the instance; the cluster is *imbalanced* when
      ``max - min > balance_abs_threshold`` (64) **and** ``max > balance_rel_threshold * min`` (1.5): then the
      least loaded instance wins;
    - otherwise the instance with the highest prefix match ratio (matched / prompt tokens) wins when that
      ratio exceeds ``cache_threshold`` (0.3), else the least loaded one (SGLang then picks the instance whose
      tree holds the fewest characters, i.e. the most cache room; least loaded stands in for it here).

    SGLang's tree evicts every ``eviction_interval`` (120 s) down to ``max_tree_size`` (2^26 characters); here
    the match is the instance's real cache (see the module docstring).
    """

    name = "cache-aware"
    needs_prefix = True

    def __init__(self, cache_threshold: float = 0.3, balance_abs_threshold: int = 64,
                 balance_rel_threshold: float = 1.5) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        loads = [v.outstanding for v in views]
        if views and max(loads) - min(loads) > self.balance_abs_threshold \
                and max(loads) > self.balance_rel_threshold * min(loads):
            return _pick(views, lambda v: float(v.outstanding), rng)
        prompt = max(1, request.prompt_tokens)
        best = max((v.prefix_hit_tokens for v in views), default=0)
        if best / prompt > self.cache_threshold:
            return _pick(views, lambda v: -float(v.prefix_hit_tokens), rng)
        return _pick(views, lambda v: float(v.outstanding), rng)


class PrefixLoad(Policy):
    """llm-d's default scheduling profile (inference scheduler ``default-plugins.yaml``): the highest weighted
    sum of three scorers, each in [0, 1]:

    - ``prefix-cache-scorer`` x 3: the fraction of the prompt's blocks cached on the instance;
    - ``queue-scorer`` x 2: ``(max_waiting - waiting) / (max_waiting - min_waiting)`` (1 when all are equal);
    - ``kv-cache-utilization-scorer`` x 2: ``1 - KV usage``.
    """

    name = "prefix-load"
    needs_prefix = True

    def __init__(self, prefix_weight: float = 3.0, queue_weight: float = 2.0, kv_weight: float = 2.0) -> None:
        self.weights = (prefix_weight, queue_weight, kv_weight)

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        wp, wq, wk = self.weights
        queues = [v.waiting for v in views]
        lo, hi = (min(queues), max(queues)) if queues else (0, 0)
        prompt = max(1, request.prompt_tokens)

        def score(v: InstanceView) -> float:
            queue = 1.0 if hi == lo else (hi - v.waiting) / (hi - lo)
            kv = v.kv_free_blocks / v.kv_total_blocks if v.kv_total_blocks else 0.0
            return wp * v.prefix_hit_tokens / prompt + wq * queue + wk * kv

        return _pick(views, lambda v: -score(v), rng)


class KvCost(Policy):
    """Dynamo's KV router (its default ``overlap_score_weight`` 1.0, temperature 0): the lowest
    ``overlap_weight x prefill blocks + decode blocks``, where prefill blocks are the prompt's blocks not cached
    on the instance and decode blocks are the KV blocks its running requests hold."""

    name = "kv-cost"
    needs_prefix = True

    def __init__(self, overlap_weight: float = 1.0) -> None:
        self.overlap_weight = overlap_weight

    def choose(self, request: RouteRequest, views: Sequence[InstanceView], rng: random.Random) -> str:
        w = self.overlap_weight

        def cost(v: InstanceView) -> float:
            bs = v.block_size
            prefill = -(-(request.prompt_tokens - v.prefix_hit_tokens) // bs)
            return w * prefill + (v.kv_total_blocks - v.kv_free_blocks)

        return _pick(views, cost, rng)
