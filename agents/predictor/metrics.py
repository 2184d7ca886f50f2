"""The agent's own Prometheus exposition: proxied totals, engine scrape, prediction errors."""

from __future__ import annotations

from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.learn import render_learning


def _metric(name: str, kind: str, help_text: str, value: float, labels: str = "") -> list[str]:
    shown = "NaN" if value != value else value
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{labels} {shown}"]


def render_metrics(core: AgentCore, now: float) -> str:
    view = core.view(now)
    tr = core.tracker
    name = core.settings.name
    inst = f'{{instance="{name}"}}'
    lines: list[str] = []
    lines += _metric(
        "blockctl_agent_requests_inflight", "gauge", "Requests the agent is tracking.", len(tr.inflight), inst
    )
    lines += _metric(
        "blockctl_agent_requests_running",
        "gauge",
        "Tracked requests believed running.",
        len(view.running),
        inst,
    )
    lines += _metric(
        "blockctl_agent_requests_waiting",
        "gauge",
        "Tracked requests believed waiting.",
        len(view.waiting),
        inst,
    )
    lines += [
        "# HELP blockctl_agent_requests_total Requests proxied to the engine, by outcome.",
        "# TYPE blockctl_agent_requests_total counter",
        f'blockctl_agent_requests_total{{instance="{name}",outcome="completed"}} {tr.total_completed}',
        f'blockctl_agent_requests_total{{instance="{name}",outcome="failed"}} {tr.total_failed}',
    ]
    lines += _metric(
        "blockctl_agent_predictions_total",
        "counter",
        "What-if predictions computed.",
        core.predictions_total,
        inst,
    )
    lines += _metric(
        "blockctl_agent_kv_free_blocks",
        "gauge",
        "Free KV blocks (engine metric when fresh).",
        view.kv_free_blocks,
        inst,
    )
    lines += _metric(
        "blockctl_agent_preempted_guess",
        "gauge",
        "Running requests believed preempted (from engine metrics).",
        view.preempted,
        inst,
    )
    lines += _metric(
        "blockctl_agent_engine_scrape_failures_total",
        "counter",
        "Failed scrapes of the engine's /metrics.",
        core.scrape_failures,
        inst,
    )
    age = float("nan") if core.last_scrape_ok is None else now - core.last_scrape_ok
    lines += _metric(
        "blockctl_agent_engine_scrape_age_seconds",
        "gauge",
        "Seconds since the last successful engine scrape.",
        age,
        inst,
    )
    cal = core.calibration
    lines += _metric(
        "blockctl_agent_calibration_overhead_seconds",
        "gauge",
        "Learned latency before the first token that the engine model does not see.",
        cal.overhead.value,
        inst,
    )
    lines += _metric(
        "blockctl_agent_calibration_tpot_factor",
        "gauge",
        "Learned actual / predicted time per output token (later arrivals, host speed).",
        cal.tpot.value,
        inst,
    )
    lines += core.errors.render()
    if core.step_learner is not None and core.ttft_learner is not None:
        lines += render_learning(core.step_learner, core.ttft_learner, name)
    return "\n".join(lines) + "\n"
