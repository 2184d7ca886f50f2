"""Which instances are out of rotation, why, and when each is probed next (pure: time comes in as ``now``).

An instance goes out at once when its agent says it is unhealthy or draining (``/predict`` 503), when its
agent refuses connections, when it misses ``MISSES_OUT`` ``/predict`` deadlines in a row, or when a forward
to it stalls. It comes back only when a probe (``GET /load``) answers 200; probes back off exponentially
from ``FIRST_PROBE_S`` to ``MAX_PROBE_S``.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_PROBE_S = 0.25
MAX_PROBE_S = 4.0
MISSES_OUT = 3


@dataclass(slots=True)
class Out:
    reason: str
    since: float
    probes: int = 0  # failed probes so far

    def next_probe_in(self) -> float:
        return min(MAX_PROBE_S, FIRST_PROBE_S * 2.0**self.probes)


class Quarantine:
    def __init__(self) -> None:
        self.out: dict[str, Out] = {}
        self._misses: dict[str, int] = {}

    def put(self, name: str, reason: str, now: float) -> bool:
        """Take ``name`` out of rotation; True when it was in rotation until now."""
        if name in self.out:
            return False
        self.out[name] = Out(reason, now)
        return True

    def probe_failed(self, name: str, reason: str) -> None:
        out = self.out.get(name)
        if out is not None:
            out.probes += 1
            out.reason = reason

    def back(self, name: str) -> Out | None:
        """``name`` answered a probe: back in rotation; returns how it was out (None if it was not)."""
        self._misses.pop(name, None)
        return self.out.pop(name, None)

    def missed(self, name: str) -> bool:
        """``name`` missed a /predict deadline; True when that makes ``MISSES_OUT`` in a row."""
        self._misses[name] = n = self._misses.get(name, 0) + 1
        return n >= MISSES_OUT

    def answered(self, name: str) -> None:
        if self._misses:
            self._misses.pop(name, None)

    def serving(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The instances in rotation; all of them when every one is out (better a try than a certain 503)."""
        if not self.out:
            return names
        return tuple(n for n in names if n not in self.out) or names
