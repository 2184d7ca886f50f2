"""/metrics through prometheus_client: names kept, label values escaped, vLLM's text read by its parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.scheduler.metrics import SchedulerMetrics
from blockctl_agents.emulator.metrics import EngineGauges, EngineMetrics, render
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.metrics import render_metrics
from blockctl_agents.predictor.observe import parse_metrics
from blockctl_agents.predictor.settings import AgentSettings

ODD = 'gpu "0" \\ on\nrack'  # a quote, a backslash and a newline: each must be escaped in the exposition


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_agent_and_scheduler_escape_label_values_and_keep_their_names() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    core = AgentCore(AgentSettings("http://127.0.0.1:1", ODD, profile.name, profile.engine_defaults()),
                     profile.model)
    agent = _samples(render_metrics(core, 10.0))
    assert agent[("blockctl_agent_requests_total", frozenset({("instance", ODD), ("outcome", "failed")}))] == 0
    assert ("blockctl_agent_kv_free_blocks", frozenset({("instance", ODD)})) in agent
    assert ("blockctl_agent_e2e_abs_pct_error_count", frozenset()) in agent
    m = SchedulerMetrics("block")
    m.routed[ODD] = 3
    m.retries = 2
    m.routing_seconds.observe(0.003)
    sched = _samples(m.render(1))
    assert sched[("blockctl_scheduler_routed_total", frozenset({("instance", ODD)}))] == 3
    assert sched[("blockctl_scheduler_retries_total", frozenset())] == 2
    assert sched[("blockctl_scheduler_routing_seconds_bucket", frozenset({("le", "0.005")}))] == 1
    assert sched[("blockctl_scheduler_instances_serving", frozenset())] == 1


def test_emulator_exposition_reads_back_through_the_agent_parser() -> None:
    m = EngineMetrics()
    g = EngineGauges(running=5, waiting=2, kv_usage=0.375, preemptions=9, block_size=16, num_gpu_blocks=1234)
    text = render(ODD, m, g)
    assert "# TYPE vllm:num_preemptions_total counter" in text
    obs = parse_metrics(text, 1.0)
    assert (obs.running, obs.waiting, obs.kv_usage, obs.preemptions_total, obs.num_gpu_blocks) == (
        5, 2, 0.375, 9.0, 1234)


def test_vllm_text_with_escapes_exponents_and_a_bad_line() -> None:
    text = "\n".join([
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{engine="0",model_name="a \\"b\\" c"} 3.0',
        'vllm:num_requests_running{engine="1",model_name="x"} 1e+01',
        'vllm:num_requests_waiting{engine="0",model_name="x"} not-a-number',  # skipped, the rest still counts
        'vllm:num_requests_waiting{engine="1",model_name="x"} 4',
        'vllm:kv_cache_usage_perc{engine="0"} 2.5e-01',
        'vllm:cache_config_info{block_size="16",num_gpu_blocks="777"} 1.0',
        'vllm:num_preemptions_total{engine="0"} 6.0',
        'vllm:time_to_first_token_seconds_bucket{le="0.1"} 99.0',
    ]) + "\n"
    obs = parse_metrics(text, 2.0)
    assert (obs.running, obs.waiting, obs.kv_usage, obs.preemptions_total, obs.num_gpu_blocks) == (
        13, 4, 0.25, 6.0, 777)
