"""The lean forward (used online) computes what the Hugging Face module computes, or is not used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blockctl.tagger import lean
from blockctl.tagger.model import load
from blockctl.tagger.predict import Tagger, encode, head, predict_log

PROMPTS = ["brief", "w1 w2 detailed w3 w4 w5 w6 w7 w8 essay", "w9 " * 40, "list yes w3", "w1 w2 #3"]


def test_a_bert_tagger_uses_the_lean_forward_and_predicts_the_same(tiny_tagger: Path) -> None:
    fast, slow = Tagger(tiny_tagger), Tagger(tiny_tagger, lean=False)
    assert (fast.path, slow.path) == ("lean", "module")
    assert fast.predict(PROMPTS) == slow.predict(PROMPTS)
    assert fast.predict(PROMPTS, batch_size=2) == fast.predict(PROMPTS)  # padding differs, answers do not
    logs_fast = predict_log(fast.model, fast.tokenizer, PROMPTS, 24, forward=fast._forward)
    logs_slow = predict_log(slow.model, slow.tokenizer, PROMPTS, 24)
    assert logs_fast == pytest.approx(logs_slow, abs=1e-5)
    assert len(set(logs_fast)) == len(PROMPTS)  # the check is not vacuous: the prompts get different answers


def test_an_encoder_it_does_not_know_keeps_the_module(tiny_tagger: Path) -> None:
    model, tokenizer, config = load(tiny_tagger)
    model.encoder.config.hidden_act = "relu"  # not the arithmetic lean_forward implements
    assert lean.lean_forward(model) is None
    forward, path = lean.verified(model, tokenizer, config.max_length)
    assert (forward, path) == (model, "module")


def test_a_lean_forward_that_disagrees_is_refused(tiny_tagger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer, config = load(tiny_tagger)
    right = lean.lean_forward(model)
    assert right is not None

    def off_by_a_little(**inputs: Any) -> Any:
        return right(**inputs) + 1e-3  # a thousandth on log(1 + tokens): above the tolerance

    monkeypatch.setattr(lean, "lean_forward", lambda _model: off_by_a_little)
    assert lean.verified(model, tokenizer, config.max_length)[1] == "module"


def test_long_prompts_are_cut_before_tokenizing_without_changing_the_tokens(tiny_tagger: Path) -> None:
    _, tokenizer, config = load(tiny_tagger)
    n = config.max_length
    short, long = "w1 w2", " ".join(f"w{i % 60}" for i in range(2000))
    assert head(short, n) is short
    cut = head(long, n)
    assert len(cut) <= n * 24 < len(long) and long.startswith(cut) and long[len(cut)] == " "
    # a cut landing in a long run of spaces leaves the head short of max_length: the full text is tokenized
    sparse = "w1 " + " " * (n * 24) + "w2 w3 brief"
    assert head(sparse, n) != sparse
    for prompts in ([long], [sparse], [long, short, sparse]):
        got = encode(tokenizer, prompts, n)
        want = tokenizer(prompts, truncation=True, max_length=n, padding=True, return_tensors="pt")
        assert got["input_ids"].tolist() == want["input_ids"].tolist()
        assert got["attention_mask"].tolist() == want["attention_mask"].tolist()
