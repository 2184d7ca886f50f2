"""A tagger's reply-history table: fitted on its train split's conversations, used by the scheduler's tagger
and by the simulator for requests that carry earlier replies."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from blockctl.bench.sim.lengths import LengthSpec, predicted_dists, predicted_lengths
from blockctl.predict.history import ReplyHistory
from blockctl.tagger.dataset import load_dialogues, split_of, token_counter


def _sharegpt_json(path: Path, n: int = 300) -> Path:
    """Conversations of 1-4 turns whose replies keep a per-conversation length (ShareGPT's file format)."""
    rng = random.Random(0)
    out = []
    for c in range(n):
        words = rng.choice((3, 30, 200))
        turns = []
        for t in range(rng.randint(1, 4)):
            turns.append({"from": "human", "value": f"conversation {c} question {t} w{c % 7}"})
            turns.append({"from": "gpt", "value": " ".join(["word"] * max(1, words + rng.randint(-2, 2)))})
        out.append({"id": str(c), "conversations": turns})
    path.write_text(json.dumps(out))
    return path


def test_dialogues_are_split_by_their_first_user_turn(tmp_path: Path) -> None:
    data = _sharegpt_json(tmp_path / "chats.json")
    parts = load_dialogues(str(data))
    assert parts is not None and sum(len(p) for p in parts.values()) > 100  # multi-turn ones only
    raw = json.loads(data.read_text())
    count = token_counter()
    for c in raw:
        turns = c["conversations"]
        if len(turns) > 2:
            lengths = count([t["value"] for t in turns[1::2]])
            assert lengths in parts[split_of(turns[0]["value"])]
    assert load_dialogues(str(tmp_path / "x.jsonl")) is None and load_dialogues("log:/nowhere") is None


def test_calibrating_fits_the_table_and_the_simulator_uses_it_for_later_turns(tiny_tagger: Path,
                                                                              tmp_path: Path) -> None:
    from blockctl.tagger.cache import predict_lengths
    from blockctl.tagger.online import OnlineTagger
    from blockctl.tagger.train import calibrate

    assert json.loads((tiny_tagger / "config.json").read_text())["history"] == {}  # a .jsonl has no chats
    tagger = tmp_path / "tagger"
    shutil.copytree(tiny_tagger, tagger)
    data = _sharegpt_json(tmp_path / "chats.json")
    calibrate(tagger, str(data))
    saved = json.loads((tagger / "config.json").read_text())["history"]
    table = ReplyHistory.from_dict(saved)
    train = load_dialogues(str(data))["train"]  # type: ignore[index]
    assert table is not None and saved["source"] == str(data) and table.turns == sum(len(r) - 1 for r in train)
    assert OnlineTagger(tagger).history == table  # what the scheduler's tagger carries

    prompts: list[str | None] = ["first question", "second question", "a third"]
    histories = [(), (200, 210), (3,)]
    true = [50, 60, 70]
    spec = LengthSpec("tagger", tagger_dir=str(tagger))
    told = predicted_lengths(spec, true, prompts, seed=0, histories=histories)
    dists = predicted_dists(spec, told, prompts, histories=histories)
    assert told[0] == predict_lengths(tagger, ["first question"])[0]  # a first turn: the tagger's answer
    for k in (1, 2):
        d = table.dist(histories[k])
        assert d is not None and told[k] == round(d.mean) and dists is not None and dists[k] == d
    assert told[1] > told[2]  # long replies so far: a long one next


def test_eval_scores_the_table_on_the_held_out_split_s_conversations(tiny_tagger: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from blockctl.cli.main import app
    from blockctl.tagger.evaluate import evaluate
    from blockctl.tagger.train import calibrate

    tagger = tmp_path / "tagger"
    shutil.copytree(tiny_tagger, tagger)
    data = _sharegpt_json(tmp_path / "chats.json")
    assert evaluate([str(tagger)], str(data))["history"] == []  # no table yet
    calibrate(tagger, str(data))
    (row,) = evaluate([str(tagger)], str(data))["history"]
    test = load_dialogues(str(data))["test"]  # type: ignore[index]
    assert row["turns"] == sum(len(r) - 1 for r in test) > 0
    assert row["metrics"]["kendall_tau"] > 0.5  # replies keep their conversation's length here
    assert 0.0 <= row["coverage"] <= 1.0
    res = CliRunner().invoke(app, ["tagger", "eval", "--model", str(tagger), "--data", str(data)])
    assert res.exit_code == 0, res.output
    assert f"reply history on the {row['turns']} later turns" in res.output
