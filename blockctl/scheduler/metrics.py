"""The scheduler's Prometheus metrics: plain counters and one histogram, written by ``prometheus_client``."""

from __future__ import annotations

import bisect
from collections import defaultdict

from blockctl.promexpo import Families

# Seconds spent deciding where a request goes (token counting, agent queries, policy).
ROUTING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class SchedulerMetrics:
    """Counters keyed by label values; names are prefixed ``blockctl_scheduler_``."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.requests: defaultdict[str, int] = defaultdict(int)  # outcome -> count
        self.routed: defaultdict[str, int] = defaultdict(int)  # instance -> requests forwarded
        self.agent_errors: defaultdict[str, int] = defaultdict(int)  # instance -> failed /predict or /load
        self.forward_errors: defaultdict[str, int] = defaultdict(int)  # instance -> failed forwards
        self.length_sources: defaultdict[str, int] = defaultdict(int)  # header | tagger | fallback | ...
        self.retries = 0
        self.fallbacks = 0  # every agent failed: round-robin chose
        self.routing_seconds = Histogram(ROUTING_BUCKETS)

    def render(self, serving: int) -> str:
        p = "blockctl_scheduler"
        f = Families()
        f.gauge(f"{p}_info", "The routing policy of this scheduler.", 1, {"policy": self.policy})
        f.gauge(f"{p}_instances_serving", "Instances that may get new requests.", serving)
        for name, help_text, label, series in (
            ("requests", "Client requests by outcome.", "outcome", self.requests),
            ("routed", "Requests forwarded, by instance.", "instance", self.routed),
            ("agent_errors", "Agent queries that failed or missed the deadline.", "instance", self.agent_errors),
            ("forward_errors", "Forwards that failed before any byte reached the client.", "instance",
             self.forward_errors),
            ("output_length_source", "Where predicted output lengths came from.", "source", self.length_sources),
        ):
            f.declare("counter", f"{p}_{name}", help_text)
            for key, value in sorted(series.items()):
                f.counter(f"{p}_{name}", help_text, value, {label: key})
        f.counter(f"{p}_retries", "Forwards retried on another instance.", self.retries)
        f.counter(f"{p}_fallbacks", "Requests routed round-robin because no agent answered.", self.fallbacks)
        h = self.routing_seconds
        f.histogram(f"{p}_routing_seconds", "Time to decide where a request goes.", h.buckets, h.counts, h.total)
        return f.render()
