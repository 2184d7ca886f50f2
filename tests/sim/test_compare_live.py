"""Live `compare`/`capacity` plumbing against a real emulated instance over HTTP (the restart is the seam)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from blockctl import replytable
from blockctl.bench.capacity import Slo, live_capacities
from blockctl.bench.compare import LiveSetup, compare_live, write_outputs
from blockctl.bench.livelengths import lengths_note, reply_table
from blockctl_agents.emulator.app import create_app
from tests.conftest import serve_app_in_thread


def _workload(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt_tokens": 20 + 3 * i, "output_tokens": 4 + i % 5}) + "\n"
                            for i in range(n)))
    return path


@pytest.mark.slow
def test_compare_live_restarts_once_per_policy_and_sends_the_same_requests(tmp_path: Path) -> None:
    restarts: list[tuple[Path, str]] = []
    workload = str(_workload(tmp_path / "w.jsonl", 12))
    table = tmp_path / "replies.json"  # what `blockctl bench reply-lengths` writes for this run
    replytable.save(table, reply_table(workload, 12, 3), source={})
    with serve_app_in_thread(create_app(max_num_seqs=4, noise=0.0, reply_lengths=str(table))) as url:
        live = LiveSetup(url, tmp_path / "state", workload, 12, "poisson", 3)
        cmp = compare_live(live, ["block", "round-robin"], [40.0, 80.0],
                           restart=lambda d, p: restarts.append((d, p)))
    assert restarts == [(tmp_path / "state", "block"), (tmp_path / "state", "round-robin")]
    assert sorted(cmp.runs) == [40.0, 80.0]
    for q, results in cmp.runs.items():
        assert [r.label for r in results] == ["block", "round-robin"]
        for r in results:
            assert r.kind == "live" and r.config["qps"] == q and r.summary.completed == 12
            # the workload's lengths, from the emulator's table: the request said nothing about them
            assert [rec.output_tokens for rec in r.records] == [4 + i % 5 for i in range(12)]
            assert r.config["lengths"] == "none"
            assert lengths_note(r.records).endswith("replies of the workload's length: 12 of 12")
        # same workload and seed: the same send schedule under each policy
        assert [x.scheduled_s for x in results[0].records] == [x.scheduled_s for x in results[1].records]
    written = write_outputs(cmp, tmp_path / "out")
    assert {p.name for p in written} >= {"block-qps40.json", "round-robin-qps80.json", "cdf-qps40.png",
                                         "p99-vs-qps.png"}


@pytest.mark.slow
def test_live_capacity_probes_the_real_endpoint(tmp_path: Path) -> None:
    restarts: list[str] = []
    probes: list[tuple[str, float, bool]] = []
    with serve_app_in_thread(create_app(max_num_seqs=2, noise=0.0)) as url:
        live = LiveSetup(url, tmp_path, str(_workload(tmp_path / "w.jsonl", 40)), 8, "poisson", 0, duration=2.0)
        found = live_capacities(
            live, ["round-robin"], [Slo("ttft", "p50", 0.5)], resolution=2.0, rel_resolution=0.2, start=20.0,
            max_qps=160.0, saturation_s=2.0, progress=lambda p, o, sat: probes.append((p, o.qps, sat)),
            restart=lambda d, p: restarts.append(p),
        )
    assert restarts == ["round-robin"]
    r = found["round-robin"]
    # Saturation probes first (2 s of arrivals each), then capacity probes, none past the ceiling.
    sat_qps = [q for _, q, sat in probes if sat]
    assert sat_qps and sat_qps[0] == 20.0 and all(q <= 160.0 for _, q, _ in probes)
    assert [q for _, q, sat in probes if not sat] == [p.qps for p in r.probes]
    if r.saturation is not None:
        sat = r.saturation.completed_rps
        if r.at_saturation:  # it held offered its saturation throughput: the search went on above it
            assert r.capacity >= sat and any(p.qps > sat for p in r.probes)
        else:
            assert r.capacity <= sat and all(p.qps <= sat for p in r.probes)
    assert all(p.requests == max(2, math.ceil(2.0 * p.qps)) for p in r.probes)  # sized by seconds of arrivals
