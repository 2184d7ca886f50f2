"""What-if forecast: when would a new request's first token come, and when would it finish, here?"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from blockctl.engine.core import Engine
from blockctl.engine.decodegroup import columns, forecast, simulate
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Phase, Prediction, Request


def _copy(r: Request) -> Request:
    produced = max(0, r.num_output_tokens)
    return Request(
        req_id=r.req_id,
        prompt_tokens=r.prompt_tokens,
        output_tokens=max(r.output_tokens, produced + 1),  # a prediction already overrun: one more token
        num_computed_tokens=min(max(0, r.num_computed_tokens), r.prompt_tokens + produced),
        num_output_tokens=produced,
        phase=r.phase,
        prefix_hit=r.prefix_hit,
    )


def predict(
    config: EngineConfig,
    model: StepTimeModel,
    running: Sequence[Request],
    waiting: Sequence[Request],
    new: Request,
) -> Prediction:
    """Simulate the instance from now (t=0) until ``new`` completes; mutates nothing.

    ``running`` in admission order and ``waiting`` in queue order carry ``output_tokens`` = the predicted
    total output length and their progress fields (``num_computed_tokens``, ``num_output_tokens``); waiting
    requests and ``new`` carry ``prefix_hit``, the tokens the instance's prefix cache holds for them now
    (their first chunk starts after it; eviction during the forecast is not modelled). A running
    request whose prediction is already overrun is assumed to need one more token. No noise is added.
    Raises EngineError when ``new`` can never fit this instance.
    """
    config = _uncached(config)
    fast = simulate(config, model, running, waiting, new)
    return fast if fast is not None else predict_exact(config, model, running, waiting, new)


def _uncached(config: EngineConfig) -> EngineConfig:
    """The forecast takes the cache's state as the requests' ``prefix_hit``: an engine config's caching flag
    is ignored (an Engine with a cache would hash blocks the what-if's requests do not carry)."""
    if config.enable_prefix_caching:
        return dataclasses.replace(config, enable_prefix_caching=False)
    return config


class Forecaster:
    """``predict`` for one instance state and any number of new requests: the state is read once.

    The state's requests must not change while the forecaster is in use (a simulator keeps one per state).
    """

    __slots__ = ("_cols", "config", "model", "running", "waiting")

    def __init__(self, config: EngineConfig, model: StepTimeModel, running: Sequence[Request],
                 waiting: Sequence[Request]) -> None:
        config = _uncached(config)
        self.config, self.model, self.running, self.waiting = config, model, running, waiting
        self._cols = columns(config, model, running, waiting)

    def predict(self, new: Request, extra_blocks: int = 0) -> Prediction:
        """``extra_blocks``: KV blocks the state's requests leave free beyond their own count, because the new
        request would share that many of its prefix-cache hit with running requests instead of taking them."""
        fast = None if self._cols is None else forecast(self._cols, new, extra_blocks)
        return fast if fast is not None else predict_exact(self.config, self.model, self.running, self.waiting,
                                                           new, extra_blocks)


def restore_state(
    config: EngineConfig, model: StepTimeModel, running: Sequence[Request], waiting: Sequence[Request]
) -> Engine:
    """An exact ``Engine`` holding copies of the what-if's ``running`` and ``waiting`` requests (without a
    prefix cache: their ``prefix_hit`` stands for it)."""
    config = _uncached(config)
    eng = Engine(config, model)
    for r in running:
        c = _copy(r)
        c.phase = Phase.RUNNING
        eng.restore(c)
    for r in waiting:
        c = _copy(r)
        c.num_computed_tokens = 0
        c.phase = Phase.WAITING
        eng.restore(c)
    return eng


def predict_exact(
    config: EngineConfig,
    model: StepTimeModel,
    running: Sequence[Request],
    waiting: Sequence[Request],
    new: Request,
    extra_blocks: int = 0,
) -> Prediction:
    """``predict`` by restoring the state into an ``Engine`` and running it (the reference the fast path is
    tested against, and its fallback for states the decode group cannot express); ``extra_blocks`` as
    ``Forecaster.predict``."""
    eng = restore_state(config.grown(extra_blocks), model, running, waiting)
    free_now = eng.free_blocks - extra_blocks
    target = Request(req_id=new.req_id, prompt_tokens=new.prompt_tokens, output_tokens=new.output_tokens,
                     prefix_hit=new.prefix_hit)
    eng.add(target)
    eng.run_until_finished(target)
    assert target.finish_time is not None and target.first_token_time is not None
    return Prediction(
        ttft_s=target.first_token_time,
        e2e_s=target.finish_time,
        queue_s=target.first_scheduled_time if target.first_scheduled_time is not None else 0.0,
        running=len(running),
        waiting=len(waiting),
        kv_free_blocks=free_now,
    )
