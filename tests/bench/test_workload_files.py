"""Workload file readers: ShareGPT JSON (also cut off), BurstGPT and Azure CSV, JSONL; errors name lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockctl.bench.sharegpt import iter_conversations, iter_json_array
from blockctl.bench.workloads import load_workload, read_workload
from blockctl.bench.workloads.files import read_file
from blockctl.errors import WorkloadError


def _conv(i: int, prompt_words: int = 8, reply_words: int = 12) -> dict[str, object]:
    return {
        "id": f"c{i}",
        "conversations": [
            {"from": "human", "value": " ".join(["question"] * prompt_words) + f" number {i}?"},
            {"from": "gpt", "value": " ".join(["answer"] * reply_words)},
            {"from": "human", "value": "thanks"},
        ],
    }


def test_truncated_json_array_yields_complete_objects_only(tmp_path: Path) -> None:
    text = json.dumps([_conv(i) for i in range(5)], indent=2)
    cut = text.index('"c4"') + 10  # inside the last conversation, mid-string
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    values = [v for _, v in iter_json_array(path)]
    assert [v["id"] for v in values] == ["c0", "c1", "c2", "c3"]
    pairs = list(iter_conversations(path))
    assert len(pairs) == 4 and pairs[0][0].startswith("question") and pairs[0][1].startswith("answer")


def test_truncated_between_objects_and_complete_file(tmp_path: Path) -> None:
    text = json.dumps([_conv(i) for i in range(3)])
    (tmp_path / "whole.json").write_text(text)
    (tmp_path / "comma.json").write_text(text[: text.rindex("{") - 1])  # ends right after a ","
    assert len(list(iter_json_array(tmp_path / "whole.json"))) == 3
    assert len(list(iter_json_array(tmp_path / "comma.json"))) == 2


def test_truncated_inside_a_literal(tmp_path: Path) -> None:
    path = tmp_path / "lit.json"
    path.write_text('[{"id": "a", "conversations": [], "ok": true}, {"id": "b", "ok": tr')
    assert [v["id"] for _, v in iter_json_array(path)] == ["a"]


def test_json_elements_longer_than_the_read_chunk(tmp_path: Path) -> None:
    big = [_conv(i, prompt_words=300_000) for i in range(3)]  # ~2.7 MB each, more than one 1 MiB read
    path = tmp_path / "big.json"
    path.write_text(json.dumps(big))
    assert [v["id"] for _, v in iter_json_array(path)] == ["c0", "c1", "c2"]


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n{"id": "a", "conversations": []},\n{"id": "b" "conversations": []},\n{"id": "c"}\n]')
    with pytest.raises(WorkloadError, match=r"bad\.json:3: invalid JSON"):
        list(iter_json_array(path))
    (tmp_path / "obj.json").write_text('{"not": "an array"}')
    with pytest.raises(WorkloadError, match=r"obj\.json:1: expected a JSON array"):
        list(iter_json_array(tmp_path / "obj.json"))


def test_sharegpt_file_filters_like_vllm_and_shuffles_with_seed(tmp_path: Path) -> None:
    convs = [_conv(i) for i in range(6)]
    convs.append({"id": "tiny", "conversations": [{"value": "hi"}, {"value": "hello, how can I help?"}]})
    convs.append(_conv(7, prompt_words=2000))  # prompt > 1024 tokens: dropped
    convs.append({"id": "short", "conversations": [{"from": "human", "value": "alone"}]})  # < 2 turns
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs))
    items = read_file(path).items
    assert len(items) == 6
    assert all(i.prompt is not None and 4 <= i.prompt_tokens <= 1024 and i.output_tokens == 12 for i in items)
    a = load_workload(str(path), num_requests=6, seed=1)
    b = load_workload(str(path), num_requests=6, seed=1)
    c = load_workload(str(path), num_requests=6, seed=2)
    assert a == b and sorted(x.prompt or "" for x in a) == sorted(x.prompt or "" for x in c) and a != c
    more = read_workload(str(path), num_requests=15, seed=0)
    assert len(more.items) == 15 and any("repeated" in n for n in more.notes)


def test_burstgpt_csv_skips_and_counts_failures(tmp_path: Path) -> None:
    path = tmp_path / "burst.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "7.5,ChatGPT,1087,0,1087,Conversation log\n"
        "9,GPT-4,300,250,550,API log\n"
    )
    wl = read_workload(str(path), num_requests=2)
    got = [(i.prompt_tokens, i.output_tokens, i.timestamp) for i in wl.items]
    assert got == [(472, 18, 0.0), (300, 250, 4.0)]
    assert all(i.prompt is None for i in wl.items)
    assert wl.notes and "skipped 1 failed" in wl.notes[0]


def test_burstgpt_bad_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "burst.csv"
    header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    path.write_text(header + "1,x,10,5,15,API log\n2,x,ten,5,15,API log\n")
    with pytest.raises(WorkloadError, match=r"burst\.csv:3: column 'Request tokens': not a number"):
        read_file(path)


def test_azure_trace_csv_parses_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.0000000,879,0\n"
    )
    wl = read_workload(str(path), num_requests=5)
    assert [(i.prompt_tokens, i.output_tokens) for i in wl.items[:2]] == [(374, 44), (396, 109)]
    assert wl.items[1].timestamp == pytest.approx(4.314579, abs=1e-5)
    assert len(wl.items) == 5 and wl.items[2].timestamp is not None and wl.items[2].timestamp > 4.3
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\nyesterday,3,4\n")
    with pytest.raises(WorkloadError, match=r"AzureLLMInferenceTrace_conv\.csv:3: column 'TIMESTAMP'"):
        read_file(path)


def test_unknown_csv_header(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(WorkloadError, match=r"x\.csv:1: unrecognised CSV header"):
        read_file(path)


def test_jsonl_prompt_text_or_token_counts(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(
        '{"prompt": "hello there world", "output_tokens": 7, "timestamp": 1.5}\n'
        "\n"
        '{"prompt_tokens": 40, "output_tokens": 3, "timestamp": 0.5}\n'
    )
    items = read_file(path).items
    assert [(i.prompt, i.prompt_tokens, i.output_tokens, i.timestamp) for i in items] == [
        (None, 40, 3, 0.0),  # sorted by time, shifted to start at 0
        ("hello there world", 3, 7, 1.0),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"output_tokens": 3}', "needs 'prompt' or 'prompt_tokens'"),
        ('{"prompt": "hi", "output_tokens": 0}', "'output_tokens' must be a positive integer"),
        ('{"prompt": "hi", "output_tokens": 2, "timestamp": "soon"}', "'timestamp' must be"),
        ('{"prompt": "hi", "output_tokens": 2', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text('{"prompt": "fine", "output_tokens": 5}\n' + line + "\n")
    with pytest.raises(WorkloadError, match=rf"w\.jsonl:2: .*{message}"):
        read_file(path)


def test_unknown_workload_name_lists_builtins() -> None:
    with pytest.raises(WorkloadError, match="unknown workload 'nope'") as info:
        load_workload("nope", num_requests=3)
    assert info.value.hint is not None and "sharegpt" in info.value.hint


def test_tokenized_sharegpt_cache_is_keyed_by_content_and_survives_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blockctl.bench.workloads.dataset import load_sharegpt_file

    cache = tmp_path / "cache"
    monkeypatch.setenv("BLOCKCTL_CACHE_DIR", str(cache))
    path = tmp_path / "sg.json"
    path.write_text(json.dumps([_conv(i) for i in range(3)]))
    first = load_sharegpt_file(path)
    (entry,) = cache.glob("sharegpt-*.json")
    assert json.loads(entry.read_text())[0][1:] == [first[0].prompt_tokens, first[0].output_tokens]
    entry.write_text("[[1, 2")  # corrupt: rebuilt silently
    assert load_sharegpt_file(path) == first
    path.write_text(json.dumps([_conv(i, reply_words=30) for i in range(2)]))  # new content: new key
    assert [i.output_tokens for i in load_sharegpt_file(path)] == [30, 30]
    assert len(list(cache.glob("sharegpt-*.json"))) == 2
