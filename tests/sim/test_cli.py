"""`blockctl bench compare --sim` and `blockctl bench capacity --sim` end to end on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blockctl.bench.results import load_results
from blockctl.cli.main import app

TINY_S = ["--sim", "--instances", "2", "--max-num-seqs", "4", "--num-gpu-blocks", "300",
          "--workload", "synthetic-sharegpt", "--duration", "60", "--saturation-duration", "60", "--seed", "1",
          "--jobs", "1"]
TINY = ["--sim", "--instances", "2", "--max-num-seqs", "4", "--num-gpu-blocks", "300",
        "--workload", "synthetic-sharegpt", "--requests", "120", "--seed", "1", "--jobs", "1"]


def test_capacity_json_gives_each_policy_its_capacity_saturation_and_probes(tmp_path: Path) -> None:
    probes = tmp_path / "probes.json"
    res = CliRunner().invoke(app, ["bench", "capacity", *TINY_S, "--policies", "block,round-robin",
                                   "--slo", "ttft-p99=2", "--lengths", "noisy:50", "--rel-resolution", "0.05",
                                   "--out", str(probes), "--json"])
    assert res.exit_code == 0, res.output
    caps = json.loads(res.stdout)
    assert list(caps) == ["block", "round-robin"]
    saved = json.loads(probes.read_text())["policies"]
    for name, r in caps.items():
        assert set(r) >= {"capacity", "capped", "saturation", "probes"} and r == saved[name]
        assert r["capacity"] > 0 and not r["capped"]
        assert r["capacity"] <= r["saturation"] or r["at_saturation"]  # above it only if it held there
        held = [p for p in r["probes"] if p["held"]]
        assert any(p["qps"] == r["capacity"] for p in held)  # the answer was run and held
        assert all(p["stable"] and p["slo_value"] <= 2 for p in held)
        assert any(not p["held"] and p["qps"] > r["capacity"] for p in r["probes"])  # bracketed from above
        assert all(p["requests"] >= 60 * p["qps"] for p in r["probes"] if not p["stopped_early"])  # 60 s of arrivals


def test_capacity_probes_do_not_depend_on_jobs() -> None:
    runner = CliRunner()
    args = ["bench", "capacity", *TINY_S[:-2], "--policies", "round-robin,random", "--slo", "ttft-p99=2",
            "--rel-resolution", "0.05", "--json"]
    one = runner.invoke(app, [*args, "--jobs", "1"])
    two = runner.invoke(app, [*args, "--jobs", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    assert json.loads(one.stdout) == json.loads(two.stdout)


def test_a_short_fixed_count_warns() -> None:
    res = CliRunner().invoke(app, ["bench", "compare", *TINY, "--policies", "random", "--qps", "6"])
    assert res.exit_code == 0, res.output
    assert "--duration" in res.output and "steady state" in res.output


def test_compare_writes_results_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["bench", "compare", *TINY, "--policies", "block,random", "--qps", "3,6",
                                   "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "sim" and set(doc["runs"]) == {"3", "6"}
    assert set(doc["runs"]["6"]) == {"block", "random"}
    assert doc["runs"]["3"]["block"]["completed"] == 120
    for name in ("block-qps3.json", "random-qps6.json", "cdf-qps3.png", "cdf-qps6.png", "p99-vs-qps.png"):
        assert (out / name).stat().st_size > 0
    run = load_results(out / "block-qps6.json")
    assert run.kind == "sim" and run.config["policy"] == "block" and len(run.records) == 120
    assert all(r.instance in ("i0", "i1") and r.ttft_s is not None for r in run.records)
    assert all(r.predicted_e2e_s is not None for r in run.records)  # block asked every instance


def test_bad_options_name_the_option() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "capacity", *TINY, "--policies", "block,nope"])
    assert res.exit_code == 1 and "--policies" in res.output and "nope" in res.output
    res = runner.invoke(app, ["bench", "capacity", *TINY, "--slo", "ttft=3"])
    assert res.exit_code == 1 and "--slo" in res.output
    res = runner.invoke(app, ["bench", "compare", *TINY, "--qps", "0"])
    assert res.exit_code == 1 and "--qps" in res.output
    res = runner.invoke(app, ["bench", "compare", *TINY, "--qps", "1", "--lengths", "noisy:x"])
    assert res.exit_code == 1 and "--lengths" in res.output




def test_compare_with_a_synthetic_predictor(tmp_path: Path) -> None:
    """`--lengths synthetic:TAU` runs like any other kind: the router is told one of ten calibrated means."""
    out = tmp_path / "syn"
    res = CliRunner().invoke(app, ["bench", "compare", *TINY, "--policies", "block", "--qps", "4",
                                   "--lengths", "synthetic:0.7", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    run = load_results(out / "block-qps4.json")
    told = {r.predicted_output_tokens for r in run.records}
    assert len(run.records) == 120 and None not in told and 2 <= len(told) <= 10
    assert {r.output_tokens for r in run.records} != told  # the engine still ran the true lengths
