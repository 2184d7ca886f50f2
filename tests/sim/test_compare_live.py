"""Live `compare`/`capacity` plumbing against a real emulated instance over HTTP (the restart is the seam)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockctl.bench.compare import LiveSetup, compare_live, write_outputs
from blockctl_agents.emulator.app import create_app
from tests.conftest import serve_app_in_thread


def _workload(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt_tokens": 20 + 3 * i, "output_tokens": 4 + i % 5}) + "\n"
                            for i in range(n)))
    return path


@pytest.mark.slow
def test_compare_live_restarts_once_per_policy_and_sends_the_same_requests(tmp_path: Path) -> None:
    restarts: list[tuple[Path, str]] = []
    with serve_app_in_thread(create_app(max_num_seqs=4, noise=0.0)) as url:
        live = LiveSetup(url, tmp_path / "state", str(_workload(tmp_path / "w.jsonl", 12)), 12, "poisson", 3)
        cmp = compare_live(live, ["block", "round-robin"], [40.0, 80.0],
                           restart=lambda d, p: restarts.append((d, p)))
    assert restarts == [(tmp_path / "state", "block"), (tmp_path / "state", "round-robin")]
    assert sorted(cmp.runs) == [40.0, 80.0]
    for q, results in cmp.runs.items():
        assert [r.label for r in results] == ["block", "round-robin"]
        for r in results:
            assert r.kind == "live" and r.config["qps"] == q and r.summary.completed == 12
            assert [rec.output_tokens for rec in r.records] == [4 + i % 5 for i in range(12)]
        # same workload and seed: the same send schedule under each policy
        assert [x.scheduled_s for x in results[0].records] == [x.scheduled_s for x in results[1].records]
    written = write_outputs(cmp, tmp_path / "out")
    assert {p.name for p in written} >= {"block-qps40.json", "round-robin-qps80.json", "cdf-qps40.png",
                                         "p99-vs-qps.png"}
