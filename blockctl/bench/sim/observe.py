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
"""

from __future__ import annotations

from blockctl.engine.core import Engine
from blockctl.engine.types import EngineConfig, Phase, Request
from blockctl.predict.lengths import LengthDist
from blockctl.predict.observation import EngineObservation
from blockctl.predict.tracker import Tracked, Tracker
from blockctl.predict.view import EngineView, build_view

SCRAPE_INTERVAL_S = 0.5  # the agent's default (AgentSettings.scrape_interval_s)


class SimAgent:
    """The agent of one simulated engine: tracks what it proxied, scrapes metrics, builds views."""

    __slots__ = ("config", "engine", "looked", "obs", "reqs", "tracker")

    def __init__(self, engine: Engine, config: EngineConfig) -> None:
        self.engine = engine
        self.config = config
        self.tracker = Tracker()
        self.reqs: dict[str, Request] = {}  # the engine's request objects, read only for streamed tokens
        self.obs: EngineObservation | None = None
        self.looked = engine.now  # when the agent last brought its token counts up to date

    def admit(self, req: Request, told: int, now: float, max_tokens: int | None = None,
              length: LengthDist | None = None) -> None:
        """The agent proxies ``req`` (already added to the engine), told ``told`` output tokens (and their
        distribution ``length``, when the router had one)."""
        self.reqs[req.req_id] = req
        self.tracker.add(Tracked(req.req_id, now, req.prompt_tokens, told, True, max_tokens, length_dist=length))

    def finish(self, req: Request) -> None:
        self.reqs.pop(req.req_id, None)
        self.tracker.finish(req.req_id, ok=True, now=req.finish_time)

    def scrape(self) -> None:
        """Record the engine's gauges now (the end of its latest step)."""
        e = self.engine
        self.obs = EngineObservation(at=e.now, running=len(e.running), waiting=len(e.waiting),
                                     kv_usage=e.kv_usage, preemptions_total=float(e.num_preemptions_total),
                                     num_gpu_blocks=e.num_blocks_total)

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
        return build_view(tr.inflight.values(), self.engine.now, self.config, self.obs, tr.last_finish_at)
