"""Training on a tiny encoder: the output directory, learning beyond the median, evaluation, caching, the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blockctl.errors import TaggerError
from blockctl.tagger.cache import predict_lengths
from blockctl.tagger.config import FORMAT, read_config
from blockctl.tagger.evaluate import evaluate
from blockctl.tagger.model import freeze_lower, load_base
from blockctl.tagger.predict import Tagger


def test_output_directory_describes_itself(tiny_tagger: Path, tiny_base: Path, synthetic_jsonl: Path) -> None:
    for name in ("config.json", "model.safetensors", "metrics.json", "encoder/config.json"):
        assert (tiny_tagger / name).is_file(), name
    assert any((tiny_tagger / "tokenizer").iterdir())
    config = read_config(tiny_tagger)
    assert (config.format, config.base, config.max_length, config.label_transform) == (
        FORMAT,
        str(tiny_base),
        24,
        "log1p",
    )
    assert config.fingerprint == hashlib.sha256((tiny_tagger / "model.safetensors").read_bytes()).hexdigest()
    assert config.data["source"] == str(synthetic_jsonl)
    assert config.data["examples"] == sum(config.data["split"][k] for k in ("train", "val", "test"))
    assert len(config.data["sha256"]) == 64
    metrics = json.loads((tiny_tagger / "metrics.json").read_text())
    assert metrics["history"][0]["step"] == 0 and "test" in metrics


def test_tagger_learns_more_than_the_median(tiny_tagger: Path, synthetic_jsonl: Path) -> None:
    report = evaluate([str(tiny_tagger)], str(synthetic_jsonl))
    rows = {r["name"]: r["metrics"] for r in report["rows"]}
    assert set(rows) == {"median", "ngram-ridge", "tiny", "tiny (mean)"}  # typical and calibrated mean
    assert rows["tiny"]["mae"] < 0.6 * rows["median"]["mae"]
    assert rows["tiny"]["kendall_tau"] > 0.4
    (cover,) = report["intervals"]  # the calibrated P10–P90 on the held-out split
    assert cover["name"] == "tiny" and 0.6 <= cover["coverage"] <= 0.95 and cover["median_width"] > 0
    # the same split as training used: the saved test metrics are reproduced by a fresh load
    saved = json.loads((tiny_tagger / "metrics.json").read_text())["test"]
    assert rows["tiny"]["mae"] == pytest.approx(saved["mae"])
    assert report["n"] == saved["n"]


def test_predictions_are_ordered_by_what_was_learned(tiny_tagger: Path) -> None:
    brief, plain, detailed = Tagger(tiny_tagger).predict(["w1 brief w2 w3", "w1 w4 w2 w3", "w1 detailed w2 w3"])
    assert brief < plain < detailed


def test_predict_lengths_caches_by_model_and_prompt(tiny_tagger: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_tagger, model)
    prompts = ["brief w1", "detailed w2", "brief w1"]
    first = predict_lengths(model, prompts, cache_dir=tmp_path / "cache")
    assert first == Tagger(model).predict(prompts)
    (model / "model.safetensors").unlink()  # cached answers need no weights
    assert predict_lengths(model, prompts, cache_dir=tmp_path / "cache") == first
    with pytest.raises(TaggerError, match="cannot load"):
        predict_lengths(model, ["a prompt never seen"], cache_dir=tmp_path / "cache")


def test_partial_fine_tuning_freezes_the_lower_layers(tiny_base: Path) -> None:
    model, _, layers = load_base(tiny_base, None)
    assert layers == 2
    head_only = freeze_lower(model, 0)
    assert head_only == sum(p.numel() for p in model.head.parameters())
    top = freeze_lower(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert top > head_only and any(n.startswith("encoder.encoder.layer.1.") for n in trainable)
    assert not any(n.startswith(("encoder.encoder.layer.0.", "encoder.embeddings")) for n in trainable)


def test_cli_train_eval_predict(tiny_base: Path, synthetic_jsonl: Path, tmp_path: Path) -> None:
    from blockctl.cli.main import app

    out = tmp_path / "cli-tagger"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train-tagger",
            "--data",
            str(synthetic_jsonl),
            "--base",
            str(tiny_base),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--max-length",
            "16",
            "--max-train",
            "100",
            "--max-val",
            "40",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "tagger written to" in res.output and (out / "model.safetensors").exists()
    res = runner.invoke(app, ["tagger", "eval", "--model", str(out), "--data", str(synthetic_jsonl), "--json"])
    assert res.exit_code == 0, res.output
    names = [r["name"] for r in json.loads(res.output)["rows"]]
    assert names == ["median", "ngram-ridge", "cli-tagger", "cli-tagger (mean)"]
    res = runner.invoke(app, ["tagger", "predict", "--model", str(out), "brief w1"])
    assert res.exit_code == 0 and json.loads(res.output)["predicted_output_tokens"][0] >= 1
    res = runner.invoke(app, ["tagger", "eval", "--model", str(tmp_path / "nope"), "--data", str(synthetic_jsonl)])
    assert res.exit_code == 1 and "is " + str(tmp_path / "nope") + " a tagger directory?" in "".join(
        res.output.split("\n")
    )


def test_missing_torch_is_a_clear_error_and_the_cli_still_loads(tmp_path: Path) -> None:
    config = {"format": FORMAT, "base": "b", "max_length": 8, "num_layers": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from blockctl.cli.main import app\n"  # the base CLI imports without torch
        "from blockctl.errors import TaggerError\n"
        "try:\n    import blockctl.tagger.model\nexcept TaggerError as e:\n    print('ERR', e.message, '|', e.hint)\n"
        "from blockctl.tagger.online import OnlineTagger\n"
        "try:\n    OnlineTagger(sys.argv[1])\nexcept TaggerError as e:\n    print('ONLINE', e.message, '|', e.hint)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True
    )
    assert "ERR the length tagger needs torch and transformers" in out.stdout
    assert "pip install 'blockctl[tagger]'" in out.stdout
    assert "ONLINE the length tagger needs torch" in out.stdout


def test_old_and_new_model_compared_on_one_request_log(tiny_tagger: Path, tmp_path: Path) -> None:
    from blockctl.tagger.requestlog import RequestLog, RequestRecord
    from tests.tagger.conftest import synthetic_examples

    log = RequestLog(tmp_path / "requests.jsonl", include_prompt=True, max_bytes=20_000, backups=50)
    for i, ex in enumerate(synthetic_examples(300, seed=7)):
        log.append(RequestRecord(i, 5, 100, ex.output_tokens, "m", "gpu0", prompt=ex.prompt, source="tagger"))
    log.close()
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(tiny_tagger, old)
    shutil.copytree(tiny_tagger, new)
    report = evaluate([str(old), str(new)], f"log:{tmp_path / 'requests.jsonl'}")
    rows = {r["name"]: r["metrics"]["mae"] for r in report["rows"]}
    assert list(rows) == ["median", "ngram-ridge", "old", "old (mean)", "new", "new (mean)"]
    assert rows["old"] == rows["new"] < rows["median"]


def test_cli_defaults_are_the_train_spec_defaults() -> None:
    """The CLI repeats TrainSpec's defaults (it must not import torch to build its options): keep them equal."""
    import inspect

    from blockctl.cli.tagger import train_tagger
    from blockctl.tagger.train import TrainSpec

    cli = {name: p.default.default for name, p in inspect.signature(train_tagger).parameters.items()}
    spec = TrainSpec()
    for name in ("epochs", "max_length", "batch_size", "lr", "train_layers", "patience", "seed"):
        assert cli[name] == getattr(spec, name), name
    for name in ("num_layers", "max_train", "max_val"):  # 0 on the command line means None (all)
        assert (cli[name] or None) == getattr(spec, name), name
