"""Side-by-side report cells and PNG plots from results (saved and reloaded through the JSON schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockctl.bench.metrics import RequestRecord, RequestSlo, summarize
from blockctl.bench.plots import plot_cdfs, plot_vs_qps
from blockctl.bench.report import comparison_table, table_cells
from blockctl.bench.results import RunResult, load_results, save_results
from blockctl.errors import ConfigError

PNG = b"\x89PNG\r\n\x1a\n"


def _result(label: str, scale: float, *, fail: int = 0) -> RunResult:
    records = [
        RequestRecord(
            index=i,
            prompt_tokens=20,
            output_tokens=10,
            scheduled_s=i * 0.1,
            sent_s=i * 0.1,
            ttft_s=scale * (0.05 + 0.01 * i),
            e2e_s=scale * (0.5 + 0.05 * i),
            itl_s=(0.05,) * 9,
            error="HTTP 503: no instance" if i < fail else None,
        )
        for i in range(20)
    ]
    return RunResult.build(label, "sim", {"qps": 10}, records, slo=RequestSlo(ttft=0.205))


def test_table_marks_the_best_and_skips_rows_nobody_has() -> None:
    fast, slow = _result("block", 1.0), _result("round-robin", 2.0, fail=2)
    cells = {label: (values, best) for label, values, best in table_cells([fast.summary, slow.summary])}
    assert cells["failed"] == (["0", "2"], 0)
    assert cells["TTFT p50 (ms)"][1] == 0 and cells["E2E p99 (s)"][1] == 0
    assert cells["SLO attainment"][0] == ["80.0%", "20.0%"]  # i <= 15 of 20; i in 2..5 of 20
    assert "requests" in cells and cells["requests"][1] is None
    no_slo = RunResult.build("x", "sim", {}, fast.records)
    assert "goodput (req/s)" not in {label for label, _, _ in table_cells([no_slo.summary])}
    table = comparison_table([fast, slow], title="t")
    assert [c.header for c in table.columns] == ["metric", "block", "round-robin"]
    rows = comparison_table([fast, slow], runs_as_rows=True)
    assert [c.header for c in rows.columns][:3] == ["run", "failed", "throughput (req/s)"]
    assert list(rows.columns[0].cells) == ["block", "round-robin"]
    assert list(rows.columns[1].cells) == ["[green]0[/green]", "2"]


def test_results_round_trip_with_nan_as_null(tmp_path: Path) -> None:
    r = _result("block", 1.0, fail=20)  # all failed: latency statistics are undefined
    path = save_results(tmp_path / "r.json", r)
    raw = json.loads(path.read_text())  # strict JSON: no NaN
    assert raw["version"] == 1 and raw["summary"]["ttft"]["p99"] is None and len(raw["records"]) == 20
    back = load_results(path)
    assert back.records == r.records and back.summary.failed == 20 and back.label == "block"
    assert summarize(back.records).errors == {"HTTP 503: no instance": 20}


def test_bad_results_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "label": "x"}')
    with pytest.raises(ConfigError, match=r"bad\.json:kind"):
        load_results(bad)
    bad.write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json: not JSON"):
        load_results(bad)


def test_plots_are_pngs(tmp_path: Path) -> None:
    a, b = _result("block", 1.0), _result("round-robin", 2.0, fail=3)
    cdf = plot_cdfs([a, b], tmp_path / "plots" / "cdf.png", metrics=("ttft", "e2e", "tpot"))
    assert cdf.read_bytes().startswith(PNG) and cdf.stat().st_size > 10_000
    series = {"block": [(5.0, a.summary), (10.0, b.summary)], "round-robin": [(5.0, b.summary)]}
    qps = plot_vs_qps(series, tmp_path / "qps.png", slo={"ttft.p99": 0.5})
    assert qps.read_bytes().startswith(PNG)
