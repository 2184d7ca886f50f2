"""Where one request goes: ask the sampled agents under a deadline, let the policy choose, retry."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from blockctl.errors import InstanceUnavailable, UpstreamError
from blockctl.scheduler.agents import AgentClient
from blockctl.scheduler.metrics import SchedulerMetrics
from blockctl.scheduler.policies import InstanceView, Policy, RoundRobin, RouteRequest, blank_view
from blockctl.scheduler.quarantine import Quarantine

log = logging.getLogger("blockctl.scheduler")
LOG_EVERY_S = 10.0
PROBE_TIMEOUT_S = 1.0


@dataclass(slots=True)
class Candidates:
    """The views one request is routed over; ``fallback`` when no agent answered and round-robin decides."""

    request: RouteRequest
    serving: tuple[str, ...]  # every instance that could take it, for retries beyond the sampled ones
    views: list[InstanceView]
    fallback: bool
    tried: set[str] = field(default_factory=set)


class Router:
    """Routing for one daemon: the policy, its rng, the round-robin fallback and the agent deadline."""

    def __init__(self, policy: Policy, *, rng: random.Random, deadline_s: float,
                 metrics: SchedulerMetrics) -> None:
        self.policy = policy
        self.rng = rng
        self.deadline_s = deadline_s
        self.metrics = metrics
        self.fallback = RoundRobin()
        self._skipped: dict[str, int] = {}  # agent -> failed queries not yet reported in the log
        self._logged: dict[str, float] = {}  # agent -> when its failures were last logged
        self.quarantine = Quarantine()
        self._probes: set[asyncio.Task[None]] = set()

    def bench(self, name: str, reason: str, client: AgentClient | None) -> None:
        """Take an instance out of rotation at once; a background probe brings it back when its agent
        answers ``/load`` again (with backoff)."""
        if not self.quarantine.put(name, reason, time.monotonic()):
            return
        log.warning("instance %s out of rotation: %s", name, reason)
        if client is not None:
            task = asyncio.get_running_loop().create_task(self._probe(name, client))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _probe(self, name: str, client: AgentClient) -> None:
        while (out := self.quarantine.out.get(name)) is not None:
            await asyncio.sleep(out.next_probe_in())
            try:
                await client.view(1, 1, predict=False, timeout=PROBE_TIMEOUT_S)
            except (UpstreamError, ValueError) as exc:
                self.quarantine.probe_failed(name, exc.message if isinstance(exc, UpstreamError) else str(exc))
                continue
            gone = self.quarantine.back(name)
            if gone is not None:
                log.warning("instance %s back in rotation after %.1f s out (%s)", name,
                            time.monotonic() - gone.since, gone.reason)

    async def aclose(self) -> None:
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)

    async def candidates(self, request: RouteRequest, serving: tuple[str, ...],
                         clients: Mapping[str, AgentClient]) -> Candidates:
        """Ask what the policy needs to know; an agent that errs or misses the deadline is left out."""
        serving = self.quarantine.serving(serving)
        if not self.policy.needs_load:
            return Candidates(request, serving, [blank_view(n) for n in serving], fallback=False)
        asked = [n for n in self.policy.sample(serving, self.rng) if n in clients]
        predict = self.policy.needs_prediction
        length = self.policy.prediction_length(request)
        prefix = request.prefix if predict or self.policy.needs_prefix else b""
        tasks = [
            asyncio.ensure_future(
                clients[n].view(request.prompt_tokens, length, predict=predict, prefix=prefix)
            )
            for n in asked
        ]
        views: list[InstanceView] = []
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.deadline_s)
            for task in pending:
                task.cancel()
            for name, task in zip(asked, tasks, strict=True):
                view = None
                if task in done and task.exception() is None:
                    view = task.result()
                    views.append(view)
                self._note(name, ok=view is not None, error=None if task in pending else task.exception(),
                           client=clients[name])
        if not views:
            self.metrics.fallbacks += 1
            return Candidates(request, serving, [blank_view(n) for n in serving], fallback=True)
        return Candidates(request, serving, views, fallback=False)

    def _note(self, name: str, *, ok: bool, error: BaseException | None, client: AgentClient) -> None:
        """Count a failed agent query; log it at most once per LOG_EVERY_S per agent (with the count).

        An agent that says its instance is unavailable, refuses connections, or misses the deadline
        ``MISSES_OUT`` times in a row takes its instance out of rotation at once."""
        if ok:
            self.quarantine.answered(name)
            return
        self.metrics.agent_errors[name] += 1
        if isinstance(error, InstanceUnavailable):
            self.bench(name, error.message, client)
            return
        if isinstance(error, UpstreamError) and not error.sent:
            self.bench(name, f"agent unreachable ({error.message})", client)
            return
        if error is None and self.quarantine.missed(name):
            self.bench(name, "no answer within the deadline 3 times in a row", client)
            return
        self._skipped[name] = self._skipped.get(name, 0) + 1
        now = time.monotonic()
        if now - self._logged.get(name, -LOG_EVERY_S) >= LOG_EVERY_S:
            why = error.message if isinstance(error, UpstreamError) else (
                str(error) if error else f"no answer within {self.deadline_s * 1000:.0f} ms")
            log.warning("agent %s skipped %d time(s) since the last report; latest: %s", name,
                        self._skipped.pop(name), why)
            self._logged[name] = now

    def choose(self, c: Candidates) -> InstanceView | None:
        """The next instance to try (never one already tried), or None when every instance was tried."""
        left = [v for v in c.views if v.instance not in c.tried]
        policy: Policy = self.fallback if c.fallback else self.policy
        if not left:
            left = [blank_view(n) for n in c.serving if n not in c.tried]
            policy = self.fallback
        if not left:
            return None
        if c.tried and not policy.needs_load:
            # A retry must not advance round-robin's counter (the failed instance would come up again next).
            name = self.rng.choice(sorted(v.instance for v in left))
        else:
            name = policy.choose(c.request, left, self.rng)
        c.tried.add(name)
        return next(v for v in left if v.instance == name)


def predicted_e2e_ms(view: InstanceView) -> str | None:
    return None if view.prediction is None else f"{view.prediction.e2e_s * 1000:.1f}"
