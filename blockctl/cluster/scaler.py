"""Scaling decisions, pure: an Observation of the cluster in, a ScaleDecision (target count, reason) out.

Policies are registered by name (``predictive``, ``reactive``) like routing policies. Both share the same
limits (``min_instances`` … ``max_instances``) and cooldowns; they differ in what they look at:

* predictive: the shell projects, with a cluster-level what-if (:mod:`blockctl.cluster.projection`), the TTFT a
  typical new request would see once an instance started now is ready (``startup_s`` ahead, arrivals
  extrapolated from the recent rate and its trend), for candidate instance counts; the policy takes the
  smallest count whose projection stays under ``target_frac × slo_ttft_s``. It removes one instance at a
  time, only when one fewer would still stay under ``down_frac`` of that target (hysteresis). Its scale-ups
  skip ``up_cooldown_s``: instances already launched are in the projection, so asking again never counts
  the same shortfall twice (the reactive policy's observed P99 cannot see them, hence its cooldown).
* reactive: what common setups do (a Kubernetes HPA on a latency metric): observed P99 TTFT over the
  window against the same target, desired = ceil(current × observed / target), at most doubling per step;
  one down when P99 is under ``down_frac`` of the target and nothing queues.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from blockctl.errors import ConfigError

Action = Literal["up", "down", "hold"]


@dataclass(frozen=True, slots=True)
class AutoscaleConfig:
    """The ``autoscale:`` section of a spec (and ``blockctl scale --auto`` / ``bench autoscale`` options)."""

    min_instances: int = 1
    max_instances: int = 8
    slo_ttft_s: float = 2.0  # the SLO: P99 TTFT at most this
    policy: str = "predictive"
    interval_s: float = 5.0  # seconds between decisions
    up_cooldown_s: float = 10.0  # after any scale-up, no further scale-up for this long
    down_cooldown_s: float = 60.0  # after any action, no scale-down for this long
    startup_s: float = 30.0  # how long a new instance takes to serve (measured for real engines)
    window_s: float = 30.0  # observation window: arrival rate, observed P99
    target_frac: float = 0.5  # aim at this fraction of the SLO
    down_frac: float = 0.5  # scale down only when one fewer stays under down_frac × target
    rate_margin: float = 0.2  # predictive: project arrivals at rate × (1 + margin) (Poisson bursts)
    down_margin: float = 0.25  # predictive: one fewer is judged at rate × (1 + rate_margin + down_margin)
    horizon_s: float = 20.0  # predictive: projected arrivals judged over [startup_s, startup_s + horizon_s]

    def validate(self, source: str | None = None) -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(msg, source=source, key=f"autoscale.{key}")

        if self.min_instances < 1:
            raise bad("min_instances", f"must be at least 1, got {self.min_instances}")
        if self.max_instances < self.min_instances:
            raise bad("max_instances", f"must be ≥ min_instances ({self.min_instances}), got {self.max_instances}")
        if self.policy not in SCALE_POLICIES:
            raise bad("policy", f"unknown '{self.policy}'; one of {', '.join(sorted(SCALE_POLICIES))}")
        for key in ("slo_ttft_s", "interval_s", "window_s", "target_frac", "down_frac", "horizon_s"):
            if not getattr(self, key) > 0:
                raise bad(key, f"must be positive, got {getattr(self, key)}")
        for key in ("up_cooldown_s", "down_cooldown_s", "startup_s", "rate_margin", "down_margin"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be ≥ 0, got {getattr(self, key)}")
        if self.down_frac > 1:
            raise bad("down_frac", f"must be at most 1, got {self.down_frac}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> AutoscaleConfig:
        """From a YAML mapping (keys as the field names); ConfigError naming the unknown or bad key."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"unknown key; valid: {', '.join(known)}", source=source, key=f"autoscale.{key}")
            want = int if key.endswith("instances") else str if key == "policy" else float
            if isinstance(value, bool) or not isinstance(value, (int, float) if want is not str else str):
                raise ConfigError(f"expected {want.__name__}, got {value!r}", source=source,
                                  key=f"autoscale.{key}")
            if want is int and not isinstance(value, int):
                raise ConfigError(f"expected an integer, got {value!r}", source=source, key=f"autoscale.{key}")
            values[key] = want(value)
        cfg = cls(**values)
        cfg.validate(source)
        return cfg

    @property
    def target_ttft_s(self) -> float:
        return self.slo_ttft_s * self.target_frac


@dataclass(frozen=True, slots=True)
class Observation:
    """What the controller (or the simulator) knows at ``now`` (seconds, any clock).

    ``projected_ttft_s`` maps candidate instance counts to the TTFT a typical new request would see once an
    instance started now is ready (predictive only; see :func:`projections`). ``ttft_p99_s`` is the observed
    P99 TTFT as :func:`observed_ttft_p99` defines it, live and in the simulator alike.
    """

    now: float
    ready: int  # serving instances
    starting: int = 0  # launched, not serving yet (counted as capacity: they are paid for already)
    waiting: int = 0  # requests queued across the serving instances
    arrival_rate: float = 0.0  # requests/s over the window
    ttft_p99_s: float | None = None
    projected_ttft_s: Mapping[int, float] = field(default_factory=dict)
    last_up_s: float | None = None  # when the last scale-up was decided
    last_down_s: float | None = None

    @property
    def current(self) -> int:
        return self.ready + self.starting


def observed_ttft_p99(
    firsts: Iterable[tuple[float, float]], waiting_ages: Iterable[float], *, now: float, window_s: float
) -> float | None:
    """The reactive policy's observed P99 TTFT (one definition for the live controller and the simulator).

    The 99th percentile (linear interpolation) over the requests whose first token came within the last
    ``window_s`` (``firsts``: (first-token time, TTFT) pairs), each at its TTFT, and the requests still
    waiting for a first token (``waiting_ages``), each at its wait so far, a lower bound on its TTFT: a queue
    that has stopped moving raises it at once. None when there is neither.
    """
    values = sorted([ttft for at, ttft in firsts if at > now - window_s] + [float(a) for a in waiting_ages])
    if not values:
        return None
    rank = 0.99 * (len(values) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (rank - lo)


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    target: int  # instances wanted (serving + starting) after this decision
    action: Action
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "action": self.action, "reason": self.reason}


class ScalePolicy(ABC):
    name: ClassVar[str]
    up_cooldown: ClassVar[bool] = True  # False: the policy's signal already counts instances starting

    def __init__(self, config: AutoscaleConfig) -> None:
        self.config = config

    @abstractmethod
    def decide(self, obs: Observation) -> ScaleDecision: ...

    def _cooling(self, obs: Observation, action: Action) -> str | None:
        """Why ``action`` may not happen now (a cooldown), or None."""
        c = self.config
        if (action == "up" and self.up_cooldown and obs.last_up_s is not None
                and obs.now - obs.last_up_s < c.up_cooldown_s):
            return f"scale-up cooldown ({c.up_cooldown_s:g} s)"
        if action == "down":
            last = max((t for t in (obs.last_up_s, obs.last_down_s) if t is not None), default=None)
            if last is not None and obs.now - last < c.down_cooldown_s:
                return f"scale-down cooldown ({c.down_cooldown_s:g} s)"
            if obs.starting:
                return "instances still starting"
        return None

    def _finish(self, obs: Observation, target: int, why: str) -> ScaleDecision:
        c = self.config
        target = max(c.min_instances, min(c.max_instances, target))
        cur = obs.current
        if cur < c.min_instances:
            return ScaleDecision(c.min_instances, "up", f"below min_instances ({c.min_instances})")
        if cur > c.max_instances:
            return ScaleDecision(c.max_instances, "down", f"above max_instances ({c.max_instances})")
        action: Action = "up" if target > cur else "down" if target < cur else "hold"
        if action == "hold":
            return ScaleDecision(cur, "hold", why)
        blocked = self._cooling(obs, action)
        if blocked is not None:
            return ScaleDecision(cur, "hold", f"{why}; waiting: {blocked}")
        return ScaleDecision(target, action, why)


class Predictive(ScalePolicy):
    name = "predictive"
    up_cooldown = False  # the projection counts launched instances from when they will serve

    def decide(self, obs: Observation) -> ScaleDecision:
        c, cur, proj = self.config, obs.current, obs.projected_ttft_s
        goal = c.target_ttft_s
        fits = sorted(n for n, ttft in proj.items() if ttft <= goal)
        if not proj:
            return self._finish(obs, cur, "no projection")
        if not fits:
            top = max(proj)
            return self._finish(obs, max(top, cur), f"projected TTFT {proj[top]:.2f} s > {goal:g} s even at {top}")
        need = fits[0]
        if need > cur:
            return self._finish(obs, need, f"projected TTFT at {cur}: {_fmt(proj.get(cur))} > {goal:g} s; "
                                f"{need} keep it under (ready in {c.startup_s:g} s)")
        fewer = proj.get(cur - 1)
        if fewer is not None and fewer <= goal * c.down_frac:
            return self._finish(obs, cur - 1, f"projected TTFT at {cur - 1}: {fewer:.2f} s "
                                f"≤ {c.down_frac:g} × {goal:g} s")
        return self._finish(obs, cur, f"projected TTFT at {cur}: {_fmt(proj.get(cur))} (target {goal:g} s)")


class Reactive(ScalePolicy):
    name = "reactive"

    def decide(self, obs: Observation) -> ScaleDecision:
        c, cur, p99 = self.config, obs.current, obs.ttft_p99_s
        goal = c.target_ttft_s
        if p99 is None:
            return self._finish(obs, cur, "no first token in the window")
        if p99 > goal:
            want = min(math.ceil(cur * p99 / goal), 2 * cur)
            return self._finish(obs, max(want, cur + 1), f"observed P99 TTFT {p99:.2f} s > {goal:g} s")
        if p99 < goal * c.down_frac and obs.waiting == 0:
            return self._finish(obs, cur - 1, f"observed P99 TTFT {p99:.2f} s < {c.down_frac:g} × {goal:g} s")
        return self._finish(obs, cur, f"observed P99 TTFT {p99:.2f} s (target {goal:g} s)")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


SCALE_POLICIES: dict[str, type[ScalePolicy]] = {p.name: p for p in (Predictive, Reactive)}


def make_scale_policy(config: AutoscaleConfig) -> ScalePolicy:
    config.validate()
    return SCALE_POLICIES[config.policy](config)


def projections(project: Callable[[int, float], float], current: int, config: AutoscaleConfig) -> dict[int, float]:
    """Projected TTFT for the counts the predictive policy needs; ``project(count, margin)`` runs the what-if.

    ``current`` first; when it meets the target, ``current − 1`` (a scale-down candidate, judged at the
    higher ``rate_margin + down_margin``: hysteresis on the load too); else upwards until a count meets it
    or ``max_instances`` (more instances never hurt, so the search stops at the first that fits).
    """
    cur = max(config.min_instances, min(config.max_instances, current))
    up = config.rate_margin
    out = {cur: project(cur, up)}
    if out[cur] <= config.target_ttft_s:
        if cur - 1 >= config.min_instances:
            out[cur - 1] = project(cur - 1, up + config.down_margin)
        return out
    for n in range(cur + 1, config.max_instances + 1):
        out[n] = project(n, up)
        if out[n] <= config.target_ttft_s:
            break
    return out
