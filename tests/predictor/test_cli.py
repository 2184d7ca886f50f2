"""``blockctl bench predictor`` and ``blockctl bench accuracy`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app


def test_bench_predictor_in_process_json() -> None:
    result = CliRunner().invoke(
        app, ["bench", "predictor", "--running", "8", "--waiting", "4", "--predictions", "30", "--no-process",
              "--states", "20", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    speed = out["in_process"]
    assert (speed["running"], speed["waiting"], speed["predictions"]) == (8, 4, 30)
    assert 0 < speed["p50_us"] <= speed["p99_us"]
    assert "process" not in out
    sat = out["saturated"]  # states from a saturated simulation: 8 seqs per instance, 260 QPS offered to 12
    assert sat["states"] == 20 and 0 <= sat["preempting"] <= 20 and 0 < sat["p50_us"] <= sat["p99_us"]


@pytest.mark.slow
def test_bench_predictor_measures_a_real_agent_process() -> None:
    result = CliRunner().invoke(
        app, ["bench", "predictor", "--running", "4", "--waiting", "2", "--predictions", "20", "--no-saturated",
              "--json"]
    )
    assert result.exit_code == 0, result.output
    proc = json.loads(result.stdout)["process"]
    assert 20 < proc["agent_rss_mb"] < 1000 and proc["inflight"] == 6
    assert 0 < proc["http_predict_p50_ms"] <= proc["http_predict_p99_ms"]


@pytest.mark.slow
@pytest.mark.parametrize("lengths", ["noisy:20", "fixed:100"])  # fixed: distributions in the quantiles header
def test_bench_accuracy_small_run(lengths: str) -> None:
    result = CliRunner().invoke(
        app, ["bench", "accuracy", "--requests", "12", "--qps", "4", "--lengths", lengths, "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["completed"] == 12 and out["failed"] == 0 and out["lengths"] == lengths
    assert out["e2e"]["n"] == 12 and out["e2e"]["mape_pct"] is not None
    assert out["ttft"]["n"] == 12


def test_bench_accuracy_virtual() -> None:
    result = CliRunner().invoke(app, ["bench", "accuracy", "--virtual", "--requests", "60", "--qps", "8", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["mode"] == "virtual" and out["completed"] == 60 and out["e2e"]["mape_pct"] < 10


def test_bench_accuracy_virtual_with_no_length_information() -> None:
    """fixed:N is what a router without a tagger has: the agent keeps each length as ShareGPT's shape at that
    mean, and the E2E error is the length error's, far above oracle's."""
    result = CliRunner().invoke(app, ["bench", "accuracy", "--virtual", "--requests", "60", "--qps", "8",
                                      "--lengths", "fixed:200", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["lengths"] == "fixed:200" and out["completed"] == 60 and out["e2e"]["mape_pct"] > 30


def test_bench_accuracy_virtual_takes_the_engines_settings() -> None:
    """An engine of 2 sequences under 8 req/s: never more than 2 run, the rest wait (the profile's default, 256,
    would run them all)."""
    result = CliRunner().invoke(app, ["bench", "accuracy", "--virtual", "--requests", "60", "--qps", "8",
                                      "--max-num-seqs", "2", "--max-num-batched-tokens", "512", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["completed"] == 60 and out["mean_running_at_dispatch"] <= 2 and out["max_waiting_at_dispatch"] > 2
    # the agent learns as live (its model is the engine's here): given the batches its decodes are exact to the
    # profile's step noise; requests that decoded beside a long prompt's unseen chunks are not scored
    given, agent = out["decode_split"]["given_batches"], out["decode_split"]["agent"]
    assert 20 <= given["count"] < 60 and given["mape_pct"] < 1 and agent["count"] == 60, out["decode_split"]


def test_bench_accuracy_tagger_lengths_need_prompt_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "accuracy", "--virtual", "--requests", "10",
                                      "--lengths", f"tagger:{tmp_path}"])  # synthetic-sharegpt: no prompt text
    assert result.exit_code == 1
    assert "tagger" in result.output


def test_bench_accuracy_rejects_a_bad_lengths_spec() -> None:
    result = CliRunner().invoke(app, ["bench", "accuracy", "--lengths", "psychic"])
    assert result.exit_code == 1
    assert "--lengths" in result.output


@pytest.mark.slow
def test_bench_accuracy_endpoint_against_a_running_agent(tmp_path: Path) -> None:
    from blockctl_agents.predictor.launch import local_instance

    args = ["bench", "accuracy", "--requests", "24", "--concurrency", "2-4", "--json"]
    with local_instance(tmp_path, engine_args=("--max-num-seqs", "8", "--max-model-len", "512")) as inst:
        runs = [CliRunner().invoke(app, [*args, "--endpoint", inst.agent_url, "--api-key", inst.token, *more])
                for more in ((), ("--open-loop", "--qps", "6"))]
    for result in runs:
        assert result.exit_code == 0, result.output
    out = json.loads(runs[0].stdout)
    assert out["completed"] == 24 and out["failed"] == 0 and out["max_model_len"] == 512
    assert out["first_third"]["e2e"]["n"] == out["last_third"]["e2e"]["n"] == 8
    assert sum(part["n"] for part in out["by_inflight_at_dispatch"].values()) == 24
    base = out["constant_baseline"]
    assert base["e2e"]["n"] == 24 and base["tpot_s"] > 0 and base["e2e"]["mape_pct"] >= 0
    learning = out["agent"]["learning"]
    assert learning["steps"]["steps_learned"] > 0 and learning["first_token"]["requests_learned"] == 24
    # The same seed again on the same (prefix-caching) engine: the lengths repeat, the prompts must not, or the
    # engine serves them from its cache while the agent prices them uncached.
    again = json.loads(runs[1].stdout)  # open loop: Poisson arrivals, whatever is in flight
    assert again["qps"] == 6 and again["concurrency"] is None and again["completed"] == 24
    assert 2.5 < again["wall_s"] < 12  # 24 arrivals at 6/s: ~4 s of arrivals, then the last ones finish
    assert out["engine_prefix_hit_tokens"] == again["engine_prefix_hit_tokens"] == 0
    # the decode's error three ways, each run's own (the agent's counters are read before and after it)
    assert again["decode"]["n"] == base["decode"]["n"] == 24
    split = again["decode_split"]
    assert split["agent"]["n"] == 24 and 18 <= split["given_batches"]["n"] <= 24, split
    assert split["given_batches"]["mape_pct"] < 10, split  # the emulator runs its own profile's steps


def test_bench_accuracy_endpoint_rejects_a_bad_open_loop_rate() -> None:
    result = CliRunner().invoke(app, ["bench", "accuracy", "--endpoint", "http://127.0.0.1:1", "--open-loop",
                                      "--qps", "0"])
    assert result.exit_code == 1
    assert "--qps" in result.output


def test_bench_accuracy_endpoint_rejects_a_bad_concurrency() -> None:
    result = CliRunner().invoke(app, ["bench", "accuracy", "--endpoint", "http://127.0.0.1:1", "--concurrency", "5-2"])
    assert result.exit_code == 1
    assert "--concurrency" in result.output


def test_bench_accuracy_virtual_without_the_prefix_cache_computes_every_shared_prompt() -> None:
    """The same shared-prefix traffic with vLLM's prefix cache off: nothing hits, so every 2,048-token system
    prompt is prefilled and the replies take longer."""
    args = ["bench", "accuracy", "--virtual", "--requests", "60", "--qps", "4", "--workload",
            "generated-shared-prefix", "--json"]
    runner = CliRunner()
    on = json.loads(runner.invoke(app, args).stdout)
    off = json.loads(runner.invoke(app, [*args, "--no-enable-prefix-caching"]).stdout)
    assert on["prefix_caching"] and not off["prefix_caching"] and off["completed"] == 60
    assert off["actual_e2e_p50_s"] > 1.1 * on["actual_e2e_p50_s"], (on, off)
