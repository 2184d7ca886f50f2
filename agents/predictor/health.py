"""Whether the agent's engine can take requests now, and why not (pure: time comes in as ``now``).

The engine is sick from the first failed or stalled scrape of its ``/metrics`` (no answer within the
scrape timeout, a refused connection, an HTTP error) or a refused forward, until a scrape answers again.
While it is sick, or while the agent drains, ``/predict`` and ``/load`` answer 503 with the reason, so
schedulers take the instance out of rotation at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class EngineHealth:
    sick: str | None = None  # why the engine takes no requests now; None while it is healthy
    since: float = 0.0
    draining: bool = False
    transitions: int = 0  # healthy -> sick changes so far

    def failed(self, reason: str, now: float) -> bool:
        """A scrape or request failed; True when the engine was healthy until now."""
        if self.sick is not None:
            self.sick = reason
            return False
        self.sick, self.since = reason, now
        self.transitions += 1
        return True

    def answered(self) -> float | None:
        """A scrape answered; returns since when it had been sick (None if it was healthy)."""
        if self.sick is None:
            return None
        self.sick = None
        return self.since

    def unavailable(self) -> str | None:
        """Why the instance takes no new requests now (None: it takes them)."""
        if self.draining:
            return "the agent is shutting down"
        return None if self.sick is None else f"engine unhealthy: {self.sick}"
