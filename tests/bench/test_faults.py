"""`blockctl bench faults` at a small size: every fault of the real drill, on a real local cluster."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from blockctl.bench.faultload import classify_stream, classify_whole
from blockctl.bench.faultwatch import executions
from blockctl.cli.main import app
from tests.conftest import free_base_port


@pytest.mark.slow
def test_bench_faults_small_drill() -> None:
    base = free_base_port()
    result = CliRunner().invoke(app, ["bench", "faults", "--concurrency", "4", "--max-tokens", "12",
                                      "--observe", "2.5", "--base-port", str(base), "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert [p["scenario"] for p in r["phases"]] == ["reset", "kill-engine", "kill-agent", "kill-scheduler",
                                                     "stop-engine", "stop-agent"]
    total = r["total"]
    assert total["hung"] == 0 and total["cut_silently"] == 0 and r["duplicates_at_least"] == 0
    assert total["completed"] > total["sent"] * 0.8
    by = {p["scenario"]: p for p in r["phases"]}
    # a dead engine or agent, and a stopped engine, leave rotation; all come back
    for name in ("kill-engine", "kill-agent", "stop-engine"):
        assert by[name]["out_s"] is not None and by[name]["out_s"] < 4.0, by[name]
        assert by[name]["back_s"] is not None, by[name]
    assert by["reset"]["connections_reset"] > 0
    # the reproduction: a request reset mid-run is an error for its client, run at most once
    assert r["drill"]["requests"] == 3 and all(n <= 1 for n in r["drill"]["engine_runs"]), r["drill"]


def test_outcomes_are_classified_from_what_the_client_saw() -> None:
    token = 'data: {"choices": [{"index": 0, "text": "x"}]}\n\n'
    error = 'data: {"error": {"message": "engine unhealthy"}}\n\n'
    assert classify_stream(200, token * 3 + "data: [DONE]\n\n", 3, None)[0] == "completed"
    assert classify_stream(200, token * 2 + error, 3, None)[0] == "cut_with_error_event"
    assert classify_stream(200, error, 3, None)[0] == "failed_before_token"
    assert classify_stream(200, token * 2, 3, "connection broke")[0] == "cut_connection_broken"
    assert classify_stream(200, token * 2 + "data: [DONE]\n\n", 3, None)[0] == "cut_silently"
    assert classify_stream(502, "", 3, None)[0] == "failed_before_token"
    assert classify_whole(200, b'{"usage": {"completion_tokens": 3}}', 3)[0] == "completed"
    assert classify_whole(200, b'{"usage": {"completion_tokens": 2}}', 3)[0] == "cut_silently"


def test_engine_runs_are_read_from_request_success_total() -> None:
    text = ('vllm:request_success_total{engine="0",model_name="m",finished_reason="stop"} 3.0\n'
            'vllm:request_success_total{engine="0",model_name="m",finished_reason="length"} 4.0\n'
            'vllm:request_success_total{engine="0",model_name="m",finished_reason="abort"} 9.0\n')
    assert executions(text) == 7.0
