"""The agent's own Prometheus exposition: proxied totals, engine scrape, prediction errors.

Written by ``prometheus_client`` from the agent's state at scrape time (see ``blockctl.promexpo``), so label
values such as an instance name with a quote are escaped.
"""

from __future__ import annotations

from blockctl.promexpo import Families
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.learn import render_learning


def render_metrics(core: AgentCore, now: float) -> str:
    view = core.view(now)
    tr = core.tracker
    inst = {"instance": core.settings.name}
    f = Families()
    f.gauge("blockctl_agent_requests_inflight", "Requests the agent is tracking.", len(tr.inflight), inst)
    f.gauge("blockctl_agent_requests_running", "Tracked requests believed running.", len(view.running), inst)
    f.gauge("blockctl_agent_requests_waiting", "Tracked requests believed waiting.", len(view.waiting), inst)
    for outcome, n in (("completed", tr.total_completed), ("failed", tr.total_failed)):
        f.counter("blockctl_agent_requests", "Requests proxied to the engine, by outcome.", n,
                  {**inst, "outcome": outcome})
    f.counter("blockctl_agent_predictions", "What-if predictions computed.", core.predictions_total, inst)
    f.gauge("blockctl_agent_kv_free_blocks", "Free KV blocks (engine metric when fresh).", view.kv_free_blocks,
            inst)
    f.gauge("blockctl_agent_preempted_guess", "Running requests believed preempted (from engine metrics).",
            view.preempted, inst)
    f.counter("blockctl_agent_engine_scrape_failures", "Failed scrapes of the engine's /metrics.",
              core.scrape_failures, inst)
    age = float("nan") if core.last_scrape_ok is None else now - core.last_scrape_ok
    f.gauge("blockctl_agent_engine_scrape_age_seconds", "Seconds since the last successful engine scrape.", age,
            inst)
    shadow = core.shadow.cache  # the shadow prefix cache beside the engine's own counters (issue 15 §2)
    f.counter("blockctl_agent_prefix_shadow_queries", "Prompt tokens the shadow prefix cache was asked about.",
              shadow.queries, inst)
    f.counter("blockctl_agent_prefix_shadow_hits", "Prompt tokens the shadow prefix cache found cached.",
              shadow.hits, inst)
    engine_hits = None if core.obs is None else core.obs.prefix_hits_total
    agreement = shadow.hits / engine_hits if engine_hits else float("nan")
    f.gauge("blockctl_agent_prefix_shadow_agreement",
            "Shadow prefix-cache hits / the engine's vllm:prefix_cache_hits (NaN until the engine has hits).",
            agreement, inst)
    cal = core.calibration
    f.gauge("blockctl_agent_calibration_overhead_seconds",
            "Learned latency before the first token that the engine model does not see.", cal.overhead.value, inst)
    f.gauge("blockctl_agent_calibration_tpot_factor",
            "Learned actual / predicted time per output token (later arrivals, host speed).", cal.tpot.value, inst)
    core.errors.render(f)
    if core.step_learner is not None and core.ttft_learner is not None:
        render_learning(f, core.step_learner, core.ttft_learner, core.settings.name)
    return f.render()
