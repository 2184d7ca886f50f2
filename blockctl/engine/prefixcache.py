"""vLLM V1's automatic prefix cache, as its scheduler sees it: which blocks a new request finds cached, which
blocks an allocation evicts, and the ``prefix_cache_queries``/``prefix_cache_hits`` counters.

Facts modelled (vLLM 0.32, ``vllm/v1/core/{block_pool,kv_cache_manager,single_type_kv_cache_manager,
kv_cache_utils}.py`` and ``sched/scheduler.py``):

- A block is keyed by a chained hash of (parent block's hash, the block's token ids); only full blocks are
  hashed. ``block_hashes`` below computes such a chain (its own hash function: only equality matters).
- A request found waiting with no computed tokens (new, or preempted) looks up the longest run of cached
  blocks from its start, capped at ``(num_tokens - 1) // block_size`` blocks: its last token is always
  computed. Hit blocks are taken with a reference count (shared, not copied).
- The counters count a request when it is admitted (not when its lookup fails to get blocks), and only on its
  first admission (a preempted request goes to separate ``preempted_*`` stats): ``queries += num_tokens``,
  ``hits += hit tokens``.
- When scheduled tokens complete a block (``min(computed + new, num_tokens)``, prompt or generated tokens),
  the block is cached at once, at allocation time. Two blocks may hold the same hash; a lookup finds the one
  cached first.
- Freeing (finish, abort, preemption) walks a request's blocks tail first: a block whose count drops to 0
  joins the free queue: a hashed block at its tail (evicted last, LRU), an unhashed one at its head (reused
  first). So the free queue is always [unhashed blocks][hashed blocks, least recently freed first].
- Allocation pops the head of the free queue: unhashed blocks first, then the least recently freed hashed
  block, whose hash is dropped (evicted). A hit on a block still in the free queue takes it out of the queue,
  so it counts against the free blocks of the allocation that takes it.
- vLLM reserves one "null" block of the pool: a cache of ``--num-gpu-blocks-override N`` has ``N - 1`` usable
  blocks (the engine model's ``num_gpu_blocks`` is the usable count).

A request's blocks beyond the hashes it carries (generated tokens the workload cannot know, or a request that
carries none) get hashes no other request can match, but still the request's own: a preempted request finds
its own blocks again, as in vLLM where it re-hashes the same tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from blockctl.engine.types import Request

NONE_HASH = 0x5EED  # the parent "hash" of a request's first block
_PRIVATE = 1 << 62  # private hashes: _PRIVATE + uid * _MAX_BLOCKS + block index (outside the 62-bit range
_MAX_BLOCKS = 1 << 24  # that block_hashes produces)


def block_hashes(token_ids: Sequence[int], block_size: int, parent: int = NONE_HASH) -> list[int]:
    """Chained hashes of the full blocks of ``token_ids``: hash i covers tokens ``[0, (i+1) * block_size)``.

    Deterministic across processes (Python hashes tuples of ints without a per-process seed) and kept in
    62 bits, so that they travel as JSON numbers and never meet the private hashes of the cache.
    """
    out: list[int] = []
    h = parent
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        h = hash((h, tuple(token_ids[start : start + block_size]))) & (_PRIVATE - 1)
        out.append(h)
    return out


@dataclass(slots=True)
class _Held:
    """The hashed blocks a request holds (block ids, in block order) and its private hash space."""

    uid: int
    ids: list[int] = field(default_factory=list)


class PrefixCache:
    """The block pool of one engine with prefix caching on. Block ids exist only for hashed blocks; unhashed
    free blocks are a count. ``free`` is the length of vLLM's free queue (what admission checks against)."""

    __slots__ = ("_bs", "_by_hash", "_hash_of", "_held", "_next_id", "_next_uid", "_refs", "blank",
                 "evictable", "hits", "queries", "shared", "total")

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.total = num_blocks
        self._bs = block_size
        self.blank = num_blocks  # unhashed blocks in the free queue (its head)
        self.evictable: OrderedDict[int, None] = OrderedDict()  # hashed free blocks, evicted first to last
        self._hash_of: dict[int, int] = {}  # block id -> hash, for every hashed block (held or free)
        self._by_hash: dict[int, list[int]] = {}  # hash -> block ids holding it, first cached first
        self._refs: dict[int, int] = {}  # block id -> requests holding it (hashed blocks only)
        self._held: dict[Request, _Held] = {}
        self._next_id = 0
        self._next_uid = 0
        self.queries = 0  # vllm:prefix_cache_queries (tokens)
        self.hits = 0  # vllm:prefix_cache_hits (tokens)
        # references beyond a block's first, over all blocks: what counting each holder's blocks apart
        # (as a what-if does) counts twice
        self.shared = 0

    @property
    def free(self) -> int:
        return self.blank + len(self.evictable)

    @property
    def cached_blocks(self) -> int:
        """Blocks whose contents a later request could hit (held or free)."""
        return len(self._hash_of)

    # ---- hashes -----------------------------------------------------------------------------------
    def _held_of(self, r: Request) -> _Held:
        h = self._held.get(r)
        if h is None:
            h = self._held[r] = _Held(self._next_uid)
            self._next_uid += 1
        return h

    def _hash(self, r: Request, held: _Held, i: int) -> int:
        hashes = r.block_hashes
        if hashes is not None and i < len(hashes):
            return hashes[i]
        return _PRIVATE + held.uid * _MAX_BLOCKS + i

    # ---- lookup -----------------------------------------------------------------------------------
    def lookup(self, r: Request) -> tuple[list[int], int]:
        """The blocks a waiting request with no computed tokens finds cached, and how many of them are in the
        free queue (taking them costs free blocks). Changes nothing."""
        held = self._held.get(r)
        limit = (r.prompt_tokens + r.num_output_tokens - 1) // self._bs
        if held is None:  # a request the cache never saw has no private blocks: only its hashes can hit
            held = _Held(-1)
            limit = min(limit, len(r.block_hashes or ()))
        found: list[int] = []
        evictable = 0
        by_hash, ev = self._by_hash, self.evictable
        for i in range(limit):
            ids = by_hash.get(self._hash(r, held, i))
            if not ids:
                break
            b = ids[0]
            found.append(b)
            if b in ev:
                evictable += 1
        return found, evictable

    def probe(self, prompt_tokens: int, hashes: Sequence[int]) -> tuple[int, int]:
        """Tokens of a new prompt (with these block hashes) that the cache holds now, and how many of those
        blocks running requests hold (a request admitted now would share them rather than take free ones)."""
        found, evictable = self.lookup(Request("probe", prompt_tokens, 1, block_hashes=hashes))
        return len(found) * self._bs, len(found) - evictable

    def admit(self, r: Request, hit: list[int], new_tokens: int) -> None:
        """``r`` is admitted with ``hit`` blocks found by ``lookup`` and ``new_tokens`` to compute now; the
        caller checked that the blocks fit. Counts the lookup as vLLM does."""
        held = self._held_of(r)
        ev, refs = self.evictable, self._refs
        for b in hit:
            if b in ev:
                del ev[b]
            elif refs[b]:
                self.shared += 1
            refs[b] += 1
        held.ids.extend(hit)
        if r.num_preemptions == 0:
            self.queries += r.prompt_tokens + r.num_output_tokens
            self.hits += len(hit) * self._bs
        computed = len(hit) * self._bs
        self.grow(r, computed, new_tokens)

    def grow(self, r: Request, computed: int, new_tokens: int) -> None:
        """``r`` (``computed`` tokens held) gets blocks for ``new_tokens`` more, and the blocks they fill are
        cached (generated tokens included)."""
        bs = self._bs
        take = -(-(computed + new_tokens) // bs) + (computed // -bs)
        if take:
            self.take(take)
        held = self._held_of(r)
        full = min(computed + new_tokens, r.prompt_tokens + r.num_output_tokens) // bs
        ids = held.ids
        for i in range(len(ids), full):
            h = self._hash(r, held, i)
            b = self._next_id
            self._next_id += 1
            self._hash_of[b] = h
            self._refs[b] = 1
            lst = self._by_hash.get(h)
            if lst is None:
                self._by_hash[h] = [b]
            else:
                lst.append(b)
            ids.append(b)

    def take(self, n: int) -> None:
        """Pop ``n`` blocks off the free queue's head (they become the caller's unhashed blocks)."""
        if n <= self.blank:
            self.blank -= n
            return
        n -= self.blank
        self.blank = 0
        ev = self.evictable
        for _ in range(n):
            b, _none = ev.popitem(last=False)
            self._evict(b)

    def _evict(self, b: int) -> None:
        h = self._hash_of.pop(b)
        del self._refs[b]
        lst = self._by_hash[h]
        lst.remove(b)
        if not lst:
            del self._by_hash[h]

    # ---- release ----------------------------------------------------------------------------------
    def release(self, r: Request, blocks: int) -> None:
        """``r`` frees all ``blocks`` it holds (finish, abort or preemption), tail first."""
        held = self._held.get(r)
        ids = held.ids if held is not None else []
        self.blank += blocks - len(ids)
        refs, ev = self._refs, self.evictable
        for b in reversed(ids):
            c = refs[b] - 1
            refs[b] = c
            if c == 0:
                ev[b] = None
            else:
                self.shared -= 1
        ids.clear()

    def forget(self, r: Request) -> None:
        """``r`` left the engine for good (its blocks already released)."""
        self._held.pop(r, None)

    def hashed_held(self, r: Request) -> int:
        held = self._held.get(r)
        return len(held.ids) if held is not None else 0
