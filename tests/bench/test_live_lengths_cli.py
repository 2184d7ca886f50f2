"""`bench reply-lengths` writes the emulators' table; live runs accept only none | oracle as lengths."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blockctl import replytable
from blockctl.bench.wire import LoadSpec, prompt_text
from blockctl.bench.workloads import read_workload
from blockctl.cli.main import app


def test_reply_lengths_cover_exactly_the_prompts_the_run_sends(tmp_path: Path) -> None:
    out = tmp_path / "t" / "replies.json"
    args = ["bench", "reply-lengths", "--workload", "synthetic-sharegpt", "--requests", "20", "--seed", "4",
            "--api", "chat", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    table = replytable.load(out)
    items = read_workload("synthetic-sharegpt", num_requests=20, seed=4).items
    spec = LoadSpec(endpoint="", model="", api="chat", seed=4)  # synthesised text depends on api and seed
    assert {replytable.prompt_key(prompt_text(it, i, spec)): it.output_tokens
            for i, it in enumerate(items)} == table
    assert json.loads(out.read_text())["source"] == {"workload": "synthetic-sharegpt", "requests": 20, "seed": 4,
                                                     "api": "chat"}


def test_live_lengths_are_none_or_oracle(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "compare", "--qps", "1", "--lengths", "noisy:50", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1 and "--lengths" in res.output and "oracle" in res.output
    res = runner.invoke(app, ["bench", "run", "--endpoint", "http://127.0.0.1:9", "--lengths", "exact"])
    assert res.exit_code == 1 and "--lengths" in res.output
