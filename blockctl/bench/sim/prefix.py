"""What a predictor agent's shadow of its instance's prefix cache tells the what-if, in simulation.

The simulated agent's shadow is the engine model's own cache: an agent that proxied every request and knows
vLLM's eviction rule (or reads its KV events) holds the same blocks, so this is the shadow at its best.
"""

from __future__ import annotations

from collections.abc import Sequence

from blockctl.engine.core import Engine
from blockctl.engine.types import Request


def prefix_hit(engine: Engine, prompt_tokens: int, block_hashes: Sequence[int]) -> int:
    """Tokens of a new prompt (with these block hashes) that ``engine``'s prefix cache holds now."""
    return 0 if engine.cache is None else engine.cache.probe(prompt_tokens, block_hashes)


def cached_prefixes(engine: Engine, waiting: list[Request]) -> None:
    """Set ``prefix_hit`` on the agent's copies of the requests it models as waiting, from the engine's cache
    (a request still in its first prefill finds the blocks it has already computed)."""
    cache = engine.cache
    if cache is None or not waiting:
        return
    mine = {r.req_id: r for r in engine.waiting}
    mine.update((r.req_id, r) for r in engine.running if r.num_output_tokens == 0)
    bs = engine.config.block_size
    for copy in waiting:
        r = mine.get(copy.req_id)
        if r is not None and r.block_hashes:
            copy.prefix_hit = len(cache.lookup(r)[0]) * bs
