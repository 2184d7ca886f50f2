"""The agent's shadow of its instance's prefix cache, from what it proxied (source a of issue 15 §2).

The agent sees every prompt it forwards and knows vLLM's cache rules (``blockctl.engine.prefixcache``): it
replays each request into its own copy of the block pool. It does not see the engine's steps, so a request is
taken in two moves: its prompt's blocks when it is forwarded (its hit counted then, as vLLM counts at
admission), its reply's blocks and the release of all of them when it completes. Between those moves the
shadow holds what the engine will hold once the request runs; a request the shadow has no room for is counted
but not held (the engine would queue it). What it cannot know: the engine's order of admissions under a queue,
blocks of replies the next prompts contain (the reply's tokens are not hashed here), and anything sent to the
engine behind the agent's back. ``agreement`` in ``/state`` measures how much that costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blockctl.engine.prefixcache import PrefixCache, block_hashes
from blockctl.engine.types import EngineConfig, Request


class ShadowCache:
    __slots__ = ("_bs", "_reqs", "cache", "skipped")

    def __init__(self, config: EngineConfig) -> None:
        self._bs = config.block_size
        self.cache = PrefixCache(config.num_gpu_blocks, config.block_size)
        self._reqs: dict[str, Request] = {}
        self.skipped = 0  # requests counted but not held (no room in the shadow)

    def hashes(self, token_ids: Sequence[int]) -> list[int]:
        return block_hashes(token_ids, self._bs)

    def match(self, prompt_tokens: int, hashes: Sequence[int]) -> tuple[int, int]:
        """Tokens of a prompt with these block hashes the instance's cache holds now (what a what-if uses), and
        how many of those blocks in-flight requests hold: admitted, it would share them, not take free ones."""
        return self.cache.probe(prompt_tokens, hashes)

    @property
    def shared_blocks(self) -> int:
        """Blocks the in-flight requests share, counted once per holder beyond the first (``build_view``)."""
        return self.cache.shared

    def admit(self, req_id: str, prompt_tokens: int, hashes: Sequence[int]) -> int:
        """A prompt forwarded to the engine: its hit (tokens) is counted and its blocks are held."""
        cache = self.cache
        r = Request(req_id, max(1, prompt_tokens), 1, block_hashes=hashes)
        found, evictable = cache.lookup(r)
        hit = len(found) * self._bs
        need = -(-r.prompt_tokens // self._bs) - len(found) + evictable
        if need > cache.free:
            self.skipped += 1
            cache.queries += r.prompt_tokens
            cache.hits += hit
            return hit
        cache.admit(r, found, r.prompt_tokens - hit)
        self._reqs[req_id] = r
        return hit

    def finish(self, req_id: str, output_tokens: int) -> None:
        """The request ended: its reply's blocks are taken (as far as there is room), then all are freed."""
        r = self._reqs.pop(req_id, None)
        if r is None:
            return
        cache = self.cache
        held = r.prompt_tokens
        grow = max(0, output_tokens - 1)
        extra = -(-(held + grow) // self._bs) - (-(-held // self._bs))
        if grow and extra <= cache.free:
            r.num_output_tokens = grow + 1
            cache.grow(r, held, grow)
            held += grow
        cache.release(r, -(-held // self._bs))
        cache.forget(r)

    def state(self, engine_queries: float | None, engine_hits: float | None) -> dict[str, Any]:
        """The shadow's counters beside the engine's own (``agreement`` = shadow hits / engine hits)."""
        cache = self.cache
        agreement = None
        if engine_hits:
            agreement = cache.hits / engine_hits
        return {
            "shadow_queries": cache.queries, "shadow_hits": cache.hits, "engine_queries": engine_queries,
            "engine_hits": engine_hits, "agreement": agreement, "held_requests": len(self._reqs),
            "skipped_requests": self.skipped, "cached_blocks": cache.cached_blocks,
        }
