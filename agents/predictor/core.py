"""The agent's beliefs and its prediction function: in-flight table, engine metrics, error stats; no I/O."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import Prediction, Request, StepShape
from blockctl.errors import EngineError
from blockctl.predict.observation import EngineObservation
from blockctl.predict.sampled import ExpectedForecaster
from blockctl.predict.shadow import ShadowCache
from blockctl.predict.tracker import RECENT_WINDOW_S, Tracked, Tracker, estimated_produced
from blockctl.predict.view import FRESH_S, EngineView, build_view
from blockctl_agents.predictor.accuracy import Calibration, PredictionErrors
from blockctl_agents.predictor.learn import StepLearner, TtftLearner
from blockctl_agents.predictor.settings import AgentSettings

NEW_ID = "blockctl-agent-new"


class AgentCore:
    """Owned by one event loop; every method is synchronous and cheap except ``predict`` (one what-if)."""

    def __init__(self, settings: AgentSettings, model: StepTimeModel) -> None:
        self.settings = settings
        self.model = model
        self.tracker = Tracker()
        self.obs: EngineObservation | None = None
        self.errors = PredictionErrors()
        self.calibration = Calibration()
        self.predictions_total = 0
        self.scrape_failures = 0
        self.last_scrape_ok: float | None = None
        learn = settings.learn
        self.step_learner = StepLearner(model, settings.engine_config, self.errors.decode_given_batches) \
            if learn else None
        self.ttft_learner = TtftLearner(settings.request_overhead_ms) if learn else None
        self._admitted_step: dict[str, tuple[int, float]] = {}  # req_id -> (batch, its decode step then)
        # (first-token time, TTFT) of finished requests, for the autoscaler's observed P99 TTFT (RECENT_WINDOW_S)
        self.recent_ttfts: deque[tuple[float, float]] = deque()
        self.shadow = ShadowCache(settings.engine_config)  # the instance's prefix cache, from what it proxied

    def token(self, req_id: str, now: float, n: int = 1) -> None:
        """A stream of ``req_id`` carried ``n`` tokens: learn the step it ends, then count them."""
        t = self.tracker.inflight.get(req_id)
        if t is not None and n > 0 and self.step_learner is not None:
            model = self.step_learner.on_token(t, now, self.tracker.inflight)
            if model is not None:
                self.model = model
        self.tracker.token(req_id, now, n)

    def overhead_s(self, prompt_tokens: int) -> float:
        """What the engine adds before the first token: learned online, else the calibration's median."""
        if self.ttft_learner is not None:
            return self.ttft_learner.overhead_s(prompt_tokens)
        return self.calibration.overhead.value

    def view(self, now: float) -> EngineView:
        tr = self.tracker
        return build_view(tr.inflight.values(), now, self.settings.engine_config, self.obs, tr.last_finish_at,
                          self.shadow.shared_blocks)

    def predict(
        self, prompt_tokens: int, predicted_output_tokens: int, now: float, block_hashes: Sequence[int] = ()
    ) -> tuple[Prediction, EngineView]:
        """What-if of a new request on this instance from now; EngineError if it can never run here. With the
        prompt's ``block_hashes``, its prefill starts after what the shadow cache holds of it (also reported to
        the scheduler as ``prefix_hit_tokens``)."""
        cfg = self.settings.engine_config
        if prompt_tokens < 1 or prompt_tokens >= cfg.max_model_len:
            raise EngineError(
                f"prompt of {prompt_tokens} tokens leaves no room for output in max_model_len {cfg.max_model_len}"
            )
        view = self.view(now)
        length = max(1, min(predicted_output_tokens, cfg.max_model_len - prompt_tokens))
        hit, held = self.shadow.match(prompt_tokens, block_hashes) if block_hashes else (0, 0)
        new = Request(NEW_ID, prompt_tokens, length, prefix_hit=hit)
        raw = ExpectedForecaster(view, self.model).predict(new, held)
        self.predictions_total += 1
        ttft, e2e = self.calibration.apply(
            raw.ttft_s, raw.e2e_s, self.step_wait_s(view, now), self.overhead_s(prompt_tokens)
        )
        prefill = self.model.prefill_seconds(prompt_tokens, hit, len(view.running), cfg.max_num_batched_tokens) \
            if block_hashes else 0.0
        return dataclasses.replace(raw, ttft_s=ttft, e2e_s=e2e, prefill_s=prefill, prefix_hit=hit), view

    def step_wait_s(self, view: EngineView, now: float) -> float:
        """Expected wait for the step in progress (the what-if starts at a step boundary). Streamed tokens
        mark step ends, so the newest one dates the current step: the wait is the rest of a decode step of
        the current batch after it; without a usable mark (no stream, or a longer step with a prefill in
        it), half a step, the mean for an arrival at a random moment."""
        if not view.running:
            return 0.0
        context = sum(r.num_computed_tokens for r in view.running)
        step = self.model.step_seconds(StepShape(decode_batch=len(view.running), decode_context=context))
        last = self.tracker.last_token_at
        if last is not None and 0.0 <= now - last < step:
            return step - (now - last)
        return 0.5 * step

    def load(self, view: EngineView, now: float) -> dict[str, Any]:
        return {
            "instance": self.settings.name,
            "running": len(view.running),
            "waiting": len(view.waiting),
            "outstanding": len(self.tracker.inflight),
            "kv_free_blocks": view.kv_free_blocks,
            "kv_total_blocks": view.kv_total_blocks,
            "waiting_prompt_blocks": view.waiting_prompt_blocks,
            "recent_requests": self.tracker.recent_requests(now),
        }

    def admit(
        self, t: Tracked, now: float, dispatched: tuple[float, float] | None = None,
        block_hashes: Sequence[int] = (),
    ) -> None:
        """Track ``t`` with its baseline prediction: ``dispatched`` = (ttft_s, e2e_s) the scheduler got from
        ``/predict`` when it sent them, else the agent's own what-if now (before ``t`` is added), with the
        prompt's cached part when its ``block_hashes`` are given."""
        t.overhead_s, t.tpot_factor = self.overhead_s(t.prompt_tokens), self.calibration.tpot.value
        if dispatched is not None:
            t.predicted_ttft_s, t.predicted_e2e_s = dispatched
        else:
            try:
                prediction, _ = self.predict(t.prompt_tokens, t.predicted_output_tokens, now, block_hashes)
            except EngineError:
                pass  # the engine will reject it; it is tracked (and failed) like any other
            else:
                t.predicted_ttft_s = prediction.ttft_s
                t.predicted_e2e_s = prediction.e2e_s
        self.tracker.add(t)
        if self.step_learner is not None:
            batch = len(self.tracker.inflight)
            self._admitted_step[t.req_id] = (batch, self.step_learner.decode_step_s(batch))

    def cache_prompt(self, req_id: str, prompt_tokens: int, block_hashes: Sequence[int]) -> int:
        """The tracked request ``req_id`` goes to the engine: the shadow cache takes its prompt, and the part
        it found cached stays with the request, so later what-ifs start its prefill after it while it
        waits. Returns that part (tokens)."""
        hit = self.shadow.admit(req_id, prompt_tokens, block_hashes)
        t = self.tracker.inflight.get(req_id)
        if t is not None and hit:
            t.view_req = Request(req_id, t.prompt_tokens, t.predicted_output_tokens, prefix_hit=hit)
        return hit

    def complete(self, req_id: str, now: float, *, ok: bool, output_tokens: int | None = None) -> Tracked | None:
        """Remove a request; for a successful one, score the arrival prediction against what happened."""
        t = self.tracker.finish(req_id, ok=ok, now=now)
        admitted_step = self._admitted_step.pop(req_id, None)
        if t is not None and t.first_token_at is not None:
            self.recent_ttfts.append((t.first_token_at, t.first_token_at - t.arrival))
        if t is not None:
            self.shadow.finish(req_id, output_tokens if output_tokens is not None else t.produced)
        if self.step_learner is not None:
            self.step_learner.finished(req_id, ok and t is not None)
        if t is None or not ok:
            return t
        if output_tokens is not None:
            t.produced = output_tokens
        if t.predicted_e2e_s is not None:
            self.errors.e2e.observe(t.predicted_e2e_s, now - t.arrival)
        if t.stream and t.predicted_ttft_s is not None and t.first_token_at is not None:
            self.errors.ttft.observe(t.predicted_ttft_s, t.first_token_at - t.arrival)
            if t.predicted_e2e_s is not None and t.last_token_at is not None and t.produced > 1:
                self.errors.decode.observe(t.predicted_e2e_s - t.predicted_ttft_s, t.last_token_at - t.first_token_at)
            self._learn(t, now, admitted_step)
        return t

    def _learn(self, t: Tracked, now: float, admitted_step: tuple[int, float] | None = None) -> None:
        """Update the calibration from one completed streaming request (its own was in ``t``)."""
        assert t.first_token_at is not None and t.predicted_ttft_s is not None and t.predicted_e2e_s is not None
        residual = (t.first_token_at - t.arrival) - (t.predicted_ttft_s - t.overhead_s)
        if self.ttft_learner is not None:
            self.ttft_learner.observe(t.prompt_tokens, residual)
        else:
            self.calibration.overhead.observe(residual)
        raw_decode = (t.predicted_e2e_s - t.predicted_ttft_s) / t.tpot_factor
        if admitted_step is not None and self.step_learner is not None:  # as the model learned since predicts it
            batch, then = admitted_step
            raw_decode *= self.step_learner.decode_step_s(batch) / then
        if t.produced > 1 and t.predicted_output_tokens > 1 and raw_decode > 0:
            actual_tpot = (now - t.first_token_at) / (t.produced - 1)
            self.calibration.tpot.observe(actual_tpot / (raw_decode / (t.predicted_output_tokens - 1)))

    def learning_state(self) -> dict[str, Any] | None:
        if self.step_learner is None or self.ttft_learner is None:
            return None
        return {"steps": self.step_learner.state(), "first_token": self.ttft_learner.state()}

    def state(self, now: float) -> dict[str, Any]:
        """Everything the agent believes, without prompts (it never stores them).

        Stable keys others read: the ``/load`` fields; ``totals.{requests,completed,failed,predictions}``;
        ``errors.{ttft,e2e,decode,decode_given_batches}.{count,mape_pct,p50_ape_pct,p90_ape_pct}``
        (accuracy.PredictionErrors); ``calibration``; ``engine.metrics``;
        ``requests[]`` in arrival order with ``id, age_s, prompt_tokens, predicted_output_tokens, max_tokens,
        stream, produced`` (estimated when not streaming), ``ttft_s`` (None before a streamed request's first
        token), ``phase`` (running | waiting, as the what-if sees it: a preempted request is waiting with
        ``produced`` > 0) and ``what_if_output_tokens`` (the total output the what-if runs it to; null when it
        cannot run here); ``recent_ttfts``: ``[seconds ago, TTFT]`` of the first tokens of requests that
        finished within ``RECENT_WINDOW_S``.
        """
        while self.recent_ttfts and self.recent_ttfts[0][0] < now - RECENT_WINDOW_S:
            self.recent_ttfts.popleft()
        view = self.view(now)
        obs = self.obs
        tracked = len(self.tracker.inflight)
        engine: dict[str, Any] = {"url": self.settings.engine_url, "metrics": None}
        if obs is not None:
            engine["metrics"] = {**asdict(obs), "age_s": now - obs.at, "fresh": now - obs.at <= FRESH_S}
            if obs.running is not None and obs.waiting is not None:
                engine["untracked_requests"] = max(0, obs.running + obs.waiting - tracked)
        engine["scrape_failures"] = self.scrape_failures
        running_ids = {r.req_id for r in view.running}
        runs_to = {r.req_id: r.output_tokens for r in (*view.running, *view.waiting)}
        return {
            **self.load(view, now),
            "profile": self.settings.profile,
            "engine_config": asdict(self.settings.engine_config),
            "simulated_num_gpu_blocks": view.config.num_gpu_blocks,
            "preempted_guess": view.preempted,
            "hidden_kv_blocks": view.hidden_blocks,
            "calibration": {
                "overhead_s": self.calibration.overhead.value,
                "tpot_factor": self.calibration.tpot.value,
                "samples": len(self.calibration.tpot.window),
            },
            "learning": self.learning_state(),
            "engine": engine,
            "totals": {
                "requests": self.tracker.total_requests,
                "completed": self.tracker.total_completed,
                "failed": self.tracker.total_failed,
                "predictions": self.predictions_total,
            },
            "errors": self.errors.summary(),
            "recent_ttfts": [[round(now - at, 3), round(ttft, 4)] for at, ttft in self.recent_ttfts],
            "prefix_cache": self.shadow.state(
                None if self.obs is None else self.obs.prefix_queries_total,
                None if self.obs is None else self.obs.prefix_hits_total,
            ),
            "requests": [
                {
                    "id": t.req_id,
                    "age_s": round(now - t.arrival, 4),
                    "prompt_tokens": t.prompt_tokens,
                    "predicted_output_tokens": t.predicted_output_tokens,
                    "max_tokens": t.max_tokens,
                    "stream": t.stream,
                    "produced": estimated_produced(t, now),
                    "phase": "running" if t.req_id in running_ids else "waiting",
                    "what_if_output_tokens": runs_to.get(t.req_id),
                    "ttft_s": None if t.first_token_at is None else round(t.first_token_at - t.arrival, 4),
                    "predicted_ttft_s": t.predicted_ttft_s,
                    "predicted_e2e_s": t.predicted_e2e_s,
                }
                for t in self.tracker.inflight.values()
            ],
        }
