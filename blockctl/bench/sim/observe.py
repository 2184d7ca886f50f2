"""A simulated instance's agent: it sees a simulated engine only as a real agent sees a real one.

The agent in front of an engine sees each request it proxies (prompt tokens, the output length it was told,
``max_tokens``), the tokens the engine streams back, and the engine's ``/metrics`` as of its last scrape.
:class:`SimAgent` keeps exactly that, in the agent's own structures (:class:`~blockctl.predict.tracker.Tracker`
and :class:`~blockctl.predict.observation.EngineObservation`), and builds the what-if state with the agent's
own :func:`~blockctl.predict.view.build_view`. So the simulator never hands a what-if the engine's true lengths,
its exact preemption state or its exact KV blocks:

* Streamed tokens: a request's produced count is the engine's (every token is streamed), its first-token time
  the engine's. A proxy dates each chunk as it relays it; here, when the count grew since the agent last
  looked, the newest token is dated at the end of the engine's latest step if the request is still decoding,
  else at the agent's previous look (it stopped in between).
* Metrics: every ``scrape_interval_s`` of virtual time the cluster calls :meth:`SimAgent.scrape`, which records
  the engine's running and waiting counts and KV usage at that moment, as vLLM's gauges would report them.
  Between scrapes the view reconciles with that (ageing) observation, exactly as a live agent does, and
  ignores it once older than ``view.FRESH_S``.
* Prefix cache: when the engines cache prefixes, the agent keeps a shadow of its engine's cache from the
  prompts it proxied (:class:`~blockctl.predict.shadow.ShadowCache`, the live agent's own), not the engine's
  cache: a proxied request's cached part is the shadow's hit when it was proxied (it stays with the request
  while it waits), a new request's what-if is told the shadow's hit now. The engine's cache counters reach the
  agent only through its scrapes (``vllm:prefix_cache_queries``/``_hits``).
"""

from __future__ import annotations

from collections.abc import Sequence

from blockctl.engine.core import Engine
from blockctl.engine.types import EngineConfig, Phase, Request
from blockctl.predict.lengths import LengthDist
from blockctl.predict.observation import EngineObservation
from blockctl.predict.shadow import ShadowCache
from blockctl.predict.tracker import Tracked, Tracker
from blockctl.predict.view import EngineView, build_view

SCRAPE_INTERVAL_S = 0.5  # the agent's default (AgentSettings.scrape_interval_s)


class SimAgent:
    """The agent of one simulated engine: tracks what it proxied, scrapes metrics, builds views."""

    __slots__ = ("config", "engine", "looked", "obs", "reqs", "shadow", "tracker")

    def __init__(self, engine: Engine, config: EngineConfig) -> None:
        self.engine = engine
        self.config = config
        self.tracker = Tracker()
        self.reqs: dict[str, Request] = {}  # the engine's request objects, read only for streamed tokens
        self.obs: EngineObservation | None = None
        self.looked = engine.now  # when the agent last brought its token counts up to date
        # the agent's shadow of the engine's prefix cache, from what it proxied (None: the engine caches none)
        self.shadow = ShadowCache(config) if config.enable_prefix_caching else None

    def admit(self, req: Request, told: int, now: float, max_tokens: int | None = None,
              length: LengthDist | None = None, block_hashes: Sequence[int] | None = None) -> None:
        """The agent proxies ``req`` (already added to the engine), told ``told`` output tokens (and their
        distribution ``length``, when the router had one); ``block_hashes`` are its prompt's, which the
        shadow cache takes (as a live agent hashes the prompt it proxies)."""
        self.reqs[req.req_id] = req
        t = Tracked(req.req_id, now, req.prompt_tokens, told, True, max_tokens, length_dist=length)
        self.tracker.add(t)
        if self.shadow is not None and block_hashes:
            hit = self.shadow.admit(req.req_id, req.prompt_tokens, self._prompt_blocks(req.prompt_tokens,
                                                                                         block_hashes))
            if hit:  # while it waits, later what-ifs start its prefill after the part found cached
                t.view_req = Request(req.req_id, req.prompt_tokens, told, prefix_hit=hit)

    def prefix_match(self, prompt_tokens: int, block_hashes: Sequence[int] | None) -> tuple[int, int]:
        """Tokens of a new prompt with these block hashes that the shadow says the engine holds now, and the
        blocks of them in-flight requests hold (``ShadowCache.match``)."""
        if self.shadow is None or not block_hashes:
            return 0, 0
        return self.shadow.match(prompt_tokens, self._prompt_blocks(prompt_tokens, block_hashes))

    def _prompt_blocks(self, prompt_tokens: int, block_hashes: Sequence[int]) -> Sequence[int]:
        return block_hashes[: prompt_tokens // self.config.block_size]  # the prompt's, never a reply's

    def finish(self, req: Request) -> None:
        self.reqs.pop(req.req_id, None)
        t = self.tracker.finish(req.req_id, ok=True, now=req.finish_time)
        if self.shadow is not None and t is not None:
            self.shadow.finish(req.req_id, req.num_output_tokens)

    def scrape(self) -> None:
        """Record the engine's gauges now (the end of its latest step)."""
        e = self.engine
        cache = e.cache
        self.obs = EngineObservation(at=e.now, running=len(e.running), waiting=len(e.waiting),
                                     kv_usage=e.kv_usage, preemptions_total=float(e.num_preemptions_total),
                                     num_gpu_blocks=e.num_blocks_total,
                                     prefix_queries_total=None if cache is None else float(cache.queries),
                                     prefix_hits_total=None if cache is None else float(cache.hits))

    def _stream(self) -> None:
        """Bring each tracked request's streamed-token count up to date (what the proxy has relayed)."""
        now = self.engine.now
        tracker = self.tracker
        reqs = self.reqs
        for t in tracker.inflight.values():
            req = reqs[t.req_id]
            produced = req.num_output_tokens
            if produced != t.produced:
                if t.first_token_at is None:
                    t.first_token_at = req.first_token_time
                t.produced = produced
                if req.phase is Phase.RUNNING:  # decoding: its newest token came at the latest step's end
                    t.last_token_at = tracker.last_token_at = now
                else:  # stopped since the agent last looked; its last token came in between
                    t.last_token_at = max(t.first_token_at or 0.0, self.looked)
        self.looked = now

    def view(self) -> EngineView:
        """The agent's view as of the end of the engine's latest step (see ``build_view``)."""
        self._stream()
        tr = self.tracker
        shared = self.shadow.shared_blocks if self.shadow is not None else 0
        return build_view(tr.inflight.values(), self.engine.now, self.config, self.obs, tr.last_finish_at, shared)
