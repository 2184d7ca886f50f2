"""The scheduler's Prometheus metrics: plain counters and one histogram, rendered as text exposition."""

from __future__ import annotations

import bisect
from collections import defaultdict

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

    def render(self, name: str) -> list[str]:
        lines, cum = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cum += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cum}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.n}')
        lines.append(f"{name}_sum {self.total}")
        lines.append(f"{name}_count {self.n}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
        lines = [
            f"# HELP {p}_info The routing policy of this scheduler.",
            f"# TYPE {p}_info gauge",
            f'{p}_info{{policy="{_escape(self.policy)}"}} 1',
            f"# HELP {p}_instances_serving Instances that may get new requests.",
            f"# TYPE {p}_instances_serving gauge",
            f"{p}_instances_serving {serving}",
        ]
        for name, help_text, label, series in (
            ("requests_total", "Client requests by outcome.", "outcome", self.requests),
            ("routed_total", "Requests forwarded, by instance.", "instance", self.routed),
            ("agent_errors_total", "Agent queries that failed or missed the deadline.", "instance",
             self.agent_errors),
            ("forward_errors_total", "Forwards that failed before any byte reached the client.", "instance",
             self.forward_errors),
            ("output_length_source_total", "Where predicted output lengths came from.", "source",
             self.length_sources),
        ):
            lines += [f"# HELP {p}_{name} {help_text}", f"# TYPE {p}_{name} counter"]
            lines += [f'{p}_{name}{{{label}="{_escape(k)}"}} {v}' for k, v in sorted(series.items())]
        lines += [f"# HELP {p}_retries_total Forwards retried on another instance.",
                  f"# TYPE {p}_retries_total counter", f"{p}_retries_total {self.retries}",
                  f"# HELP {p}_fallbacks_total Requests routed round-robin because no agent answered.",
                  f"# TYPE {p}_fallbacks_total counter", f"{p}_fallbacks_total {self.fallbacks}",
                  f"# HELP {p}_routing_seconds Time to decide where a request goes.",
                  f"# TYPE {p}_routing_seconds histogram"]
        lines += self.routing_seconds.render(f"{p}_routing_seconds")
        return "\n".join(lines) + "\n"
