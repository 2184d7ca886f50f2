"""A simulated cluster whose instance set changes: instances join (after their start-up) and retire (drain)."""

from __future__ import annotations

import dataclasses

from blockctl.bench.sim.cluster import ClusterSim, _Instance
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Request
from blockctl.scheduler.policies import Policy


class ScalableSim(ClusterSim):
    """:class:`ClusterSim` plus :meth:`add_instance` and :meth:`retire`.

    NOTE: ``names`` are the instances the router may choose; a retired instance leaves ``names`` but keeps
    stepping (``advance``/``drain``) until its requests finish. Names are never reused (``i0``, ``i1``, …).
    """

    def __init__(
        self,
        instances: int,
        config: EngineConfig,
        model: StepTimeModel,
        policy: Policy,
        *,
        seed: int = 0,
        noise: float | None = None,
    ) -> None:
        super().__init__(instances, config, model, policy, seed=seed, noise=noise)
        self.retired: set[str] = set()

    def add_instance(self, now: float) -> str:
        """A new empty instance that serves from ``now`` on; returns its name."""
        i = len(self._instances)
        name = f"i{i}"
        self._instances[name] = _Instance(name, self._engine(i, now), self.config)
        self.names.append(name)
        return name

    def retire(self, name: str) -> None:
        """Stop routing to ``name``; it keeps running what it holds."""
        self.names.remove(name)
        self.retired.add(name)

    def busy(self, name: str) -> bool:
        return self._instances[name].engine.has_work()

    def load(self, name: str) -> int:
        e = self._instances[name].engine
        return len(e.running) + len(e.waiting)

    def waiting(self, name: str) -> int:
        return len(self._instances[name].engine.waiting)

    def last_finish(self, name: str) -> float:
        return self._instances[name].engine.now

    def first_tokens(self, t: float) -> tuple[list[tuple[float, float]], list[float]]:
        """In-flight requests as the agents report them at ``t``: (first-token time, TTFT) of those past their
        first token, and the waits so far of those without one (finished ones are in ``records``)."""
        firsts: list[tuple[float, float]] = []
        waiting: list[float] = []
        for inst in self._instances.values():
            for req in (*inst.engine.running, *inst.engine.waiting):
                if req.first_token_time is not None and req.first_token_time <= t:
                    firsts.append((req.first_token_time, req.first_token_time - req.arrival_time))
                else:
                    waiting.append(t - req.arrival_time)
        return firsts, waiting

    def queues(self, name: str) -> tuple[list[Request], list[Request]]:
        """(running, waiting) of ``name`` as its agent would see them (predicted lengths)."""
        view = self._instances[name].agent.view()
        return [dataclasses.replace(r) for r in view.running], [dataclasses.replace(r) for r in view.waiting]
