"""`blockctl bench compare --sim` and `blockctl bench capacity --sim` end to end on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blockctl.bench.results import load_results
from blockctl.cli.main import app

TINY = ["--sim", "--instances", "2", "--max-num-seqs", "4", "--num-gpu-blocks", "300",
        "--workload", "synthetic-sharegpt", "--requests", "120", "--seed", "1", "--jobs", "1"]


def test_capacity_json_maps_each_policy_to_its_capacity(tmp_path: Path) -> None:
    probes = tmp_path / "probes.json"
    res = CliRunner().invoke(app, ["bench", "capacity", *TINY, "--policies", "block,round-robin",
                                   "--slo", "ttft-p99=2", "--lengths", "noisy:50", "--rel-resolution", "0.05",
                                   "--out", str(probes), "--json"])
    assert res.exit_code == 0, res.output
    caps = json.loads(res.stdout)
    assert list(caps) == ["block", "round-robin"]
    assert all(isinstance(v, float) and v > 0 for v in caps.values())
    doc = json.loads(probes.read_text())
    for name, cap in caps.items():
        probes_run = doc["policies"][name]["probes"]
        assert {"qps": cap, "holds": True} in [{"qps": round(p["qps"], 4), "holds": p["holds"]}
                                               for p in probes_run]
        assert any(not p["holds"] and p["qps"] > cap for p in probes_run)  # bracketed from above


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


def test_a_lone_policy_searched_with_two_processes_finds_the_one_process_capacity() -> None:
    runner = CliRunner()
    args = ["bench", "capacity", *TINY[:-2], "--policies", "block", "--slo", "ttft-p99=2",
            "--rel-resolution", "0.05", "--json"]
    one = runner.invoke(app, [*args, "--jobs", "1"])
    two = runner.invoke(app, [*args, "--jobs", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    # Same deterministic simulation, different probe order: the two answers agree to the resolution.
    cap1, cap2 = json.loads(one.stdout)["block"], json.loads(two.stdout)["block"]
    assert abs(cap1 - cap2) <= 0.05 * max(cap1, cap2)
