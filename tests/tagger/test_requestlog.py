"""Request log: hashed prompts by default, buffered writes, size rotation, and reading back as training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockctl.errors import TaggerError
from blockctl.tagger.dataset import load_examples, prompt_sha256
from blockctl.tagger.requestlog import RequestLog, RequestRecord, iter_log, log_files


def record(i: int, prompt: str | None = None) -> RequestRecord:
    return RequestRecord(
        time=1000.0 + i,
        prompt_tokens=10 + i,
        predicted_output_tokens=50,
        output_tokens=40 + i,
        model="m",
        instance=f"gpu{i % 2}",
        prompt=prompt if prompt is not None else f"prompt {i}",
        source="tagger",
    )


def test_prompt_text_is_hashed_unless_enabled(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.jsonl")
    log.append(record(1, "secret question"))
    log.close()
    line = (tmp_path / "requests.jsonl").read_text()
    assert "secret question" not in line
    obj = json.loads(line)
    assert obj["prompt_sha256"] == prompt_sha256("secret question")
    assert (obj["prompt_tokens"], obj["predicted_output_tokens"], obj["output_tokens"]) == (11, 50, 41)
    assert (obj["model"], obj["instance"], obj["source"]) == ("m", "gpu1", "tagger")

    with_text = RequestLog(tmp_path / "with.jsonl", include_prompt=True)
    with_text.append(record(1, "secret question"))
    with_text.close()
    assert json.loads((tmp_path / "with.jsonl").read_text())["prompt"] == "secret question"


def test_appends_are_buffered_until_size_or_age(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, flush_bytes=10_000, flush_interval_s=1.0, clock=lambda: now[0])
    log.append(record(1))
    log.append(record(2))
    assert not path.exists() or path.read_text() == ""  # still in memory
    now[0] = 1.5
    log.append(record(3))  # the oldest buffered line is now older than the interval
    assert len(path.read_text().splitlines()) == 3
    small = RequestLog(tmp_path / "small.jsonl", flush_bytes=1, clock=lambda: 0.0)
    small.append(record(1))
    assert len((tmp_path / "small.jsonl").read_text().splitlines()) == 1
    small.close()
    log.close()


def test_rotation_keeps_backups_and_reads_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    line_len = len(RequestLog(path).line(record(10)).encode())
    log = RequestLog(path, max_bytes=3 * line_len, backups=2, flush_bytes=1)
    for i in range(10, 30):  # 20 lines, 3 per file → 7 files written, only the newest 3 survive
        log.append(record(i))
    log.close()
    files = log_files(path)
    assert [f.name for f in files] == ["requests.jsonl.2", "requests.jsonl.1", "requests.jsonl"]
    assert all(f.stat().st_size <= 3 * line_len for f in files)
    times = [obj["time"] for obj in iter_log(path)]
    assert times == sorted(times) and times[-1] == 1029.0 and len(times) == 8  # 3 + 3 + 2


def test_log_source_trains_on_logged_prompts(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, include_prompt=True, max_bytes=400, backups=20, flush_bytes=1)
    for i in range(12):
        log.append(record(i))
    log.close()
    assert len(log_files(path)) > 1
    with path.open("a") as fh:
        fh.write('{"time": 5, "prompt": "torn')  # a crash mid-write leaves half a line: skipped
    examples = load_examples(f"log:{path}")
    assert [(e.prompt, e.output_tokens) for e in examples] == [(f"prompt {i}", 40 + i) for i in range(12)]


def test_log_without_prompt_text_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path)
    log.append(record(1))
    log.close()
    with pytest.raises(TaggerError, match="none with prompt text") as info:
        load_examples(f"log:{path}")
    assert info.value.hint and "include_prompt" in info.value.hint
    with pytest.raises(TaggerError, match="no request log"):
        load_examples(f"log:{tmp_path / 'absent.jsonl'}")
