"""The request log through a real daemon in front of the real emulator: token counts, prompts, retraining."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.cluster import local
from blockctl.cluster import spec as spec_module
from blockctl.cluster.local_plan import LocalSpec
from blockctl.cluster.schedulers import SchedulerSpec
from blockctl.cluster.spec import load_spec, parse_spec
from blockctl.cluster.state import ClusterState, ensure_token
from blockctl.errors import ConfigError
from blockctl.scheduler.__main__ import _parser, _request_log
from blockctl.scheduler.app import SchedulerSettings, create_app
from blockctl.scheduler.reqlog import RequestLogSettings, StreamTokens, completion_tokens
from blockctl.tagger.dataset import load_examples, prompt_sha256
from blockctl_agents.emulator.app import create_app as create_emulator
from tests.conftest import serve_app
from tests.scheduler.fakes import write_cluster

PROMPTS = ["Tell me about the sea.", "Name three rivers.", "Why is the sky blue?"]


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path, log: RequestLogSettings | None) -> AsyncIterator[str]:
    """One emulator (reached as instance "emu") behind one round-robin scheduler; yields its URL."""
    ensure_token(tmp_path)
    async with serve_app(create_emulator(max_num_seqs=8, seed=3)) as emu:
        write_cluster(tmp_path, {"emu": emu}, policy="round-robin")
        app = create_app(SchedulerSettings(state_dir=tmp_path, policy="round-robin", seed=0, poll_s=0.02,
                                           request_log=log))
        async with serve_app(app) as url:
            yield url


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def run_three(url: str) -> list[int]:
    """A plain completion, a streamed completion and a streamed chat with usage; the tokens each got."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    try:
        plain = await client.completions.create(model="emulated", prompt=PROMPTS[0], max_tokens=40)
        assert plain.usage is not None
        got = [plain.usage.completion_tokens]
        stream = await client.completions.create(model="emulated", prompt=PROMPTS[1], max_tokens=40,
                                                 stream=True, extra_headers={"x-blockctl-output-tokens": "9"})
        got.append(sum([1 async for c in stream if c.choices and c.choices[0].text]))
        chat = await client.chat.completions.create(
            model="emulated", messages=[{"role": "user", "content": PROMPTS[2]}], max_tokens=40, stream=True,
            stream_options={"include_usage": True})
        usage = None
        n = 0
        async for c in chat:
            n += bool(c.choices and c.choices[0].delta.content)
            usage = c.usage or usage
        assert usage is not None and usage.completion_tokens == n
        got.append(n)
    finally:
        await client.close()
    return got


async def test_each_request_logs_the_tokens_the_client_received_without_prompt_text(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "requests.jsonl"
    async with daemon(tmp_path, RequestLogSettings(log)) as url:
        got = await run_three(url)
    rows = lines(log)
    assert [r["output_tokens"] for r in rows] == got and all(n >= 1 for n in got)
    assert [r["source"] for r in rows] == ["fallback", "header", "fallback"]
    assert [r["predicted_output_tokens"] for r in rows] == [40, 9, 40]
    assert rows[0]["prompt_sha256"] == prompt_sha256(PROMPTS[0])
    for r in rows:
        assert "prompt" not in r and r["instance"] == "emu" and r["model"] == "emulated"
        assert r["status"] == 200 and r["outcome"] == "completed" and r["prompt_tokens"] > 0
    assert PROMPTS[1] not in log.read_text(encoding="utf-8")


async def test_log_prompts_feeds_train_tagger_data_loading(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    logs = tmp_path / "logs"
    async with daemon(tmp_path, RequestLogSettings(logs / "requests-8000.jsonl", include_prompt=True)) as url:
        got = await run_three(url)
    rows = lines(logs / "requests-8000.jsonl")
    assert [r["prompt"] for r in rows][:2] == PROMPTS[:2] and PROMPTS[2] in rows[2]["prompt"]
    # A second daemon's file, with a cut-short reply that must not be learnt from.
    other = {**rows[0], "prompt": "other daemon", "output_tokens": 5}
    aborted = {**rows[0], "prompt": "cut short", "outcome": "client_aborted"}
    (logs / "requests-8001.jsonl").write_text(json.dumps(other) + "\n" + json.dumps(aborted) + "\n")
    (logs / "scheduler-8000.log").write_text("not a request log\n")
    for source in (f"log:{logs}", f"log:{logs}/requests-*.jsonl"):
        examples = load_examples(source)
        assert sorted((e.prompt[:12], e.output_tokens) for e in examples) == sorted(
            [(r["prompt"][:12], n) for r, n in zip(rows, got, strict=True)] + [("other daemon", 5)])
    assert len(load_examples(f"log:{logs}/requests-8000.jsonl")) == 3
    monkeypatch.setenv("HOME", str(tmp_path))
    assert len(load_examples("log:~/logs")) == 4


async def test_client_abort_is_logged_as_such(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    async with daemon(tmp_path, RequestLogSettings(log)) as url, httpx.AsyncClient(base_url=url) as http:
        body = {"model": "emulated", "prompt": "go on", "max_tokens": 2000, "ignore_eos": True, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    break
        await asyncio.sleep(0.3)  # the daemon notices the disconnect
    (row,) = lines(log)
    assert row["outcome"] == "client_aborted" and row["status"] == 200
    assert 3 <= row["output_tokens"] < 2000


def test_stream_counting_skips_non_text_events_and_prefers_usage() -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
        b'data: {"choices": [{"index": 0, "delta": {"content": " there"}}]}\n\n',  # spaced: parsed
        b'data: {"choices":[{"index":0,"text":"","finish_reason":"abort"}]}\n\n',
        b'data: {"choices":[{"index":0,"text":"\\"text\\":\\"","finish_reason":null}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    whole = b"".join(events)
    for size in (1, 7, 64, len(whole)):  # any split of the byte stream counts the same
        count = StreamTokens()
        for at in range(0, len(whole), size):
            count.feed(whole[at:at + size])
        assert (count.events, count.tokens) == (3, 3)
    count.feed(b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":17}}\n\n')
    assert (count.events, count.tokens) == (3, 17)


def test_completion_tokens_of_a_json_body() -> None:
    assert completion_tokens(b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":42}}') == 42
    assert completion_tokens(b'{"usage": {"completion_tokens" :\n 7}}') == 7
    assert completion_tokens(b'{"choices":[{"text":"\\"completion_tokens\\": 9"}]}') is None
    assert completion_tokens(b"not json") is None


def test_daemon_flags_and_cluster_paths(tmp_path: Path) -> None:
    base = ["--state-dir", str(tmp_path), "--port", "8000"]
    default = _request_log(_parser().parse_args(base))
    assert default == RequestLogSettings(tmp_path / "logs" / "requests.jsonl", 64 << 20, 5, False)
    assert _request_log(_parser().parse_args([*base, "--no-request-log"])) is None
    custom = _request_log(_parser().parse_args([*base, "--request-log", "x.jsonl", "--request-log-max-mb", "2",
                                                "--request-log-backups", "1", "--log-prompts"]))
    assert custom == RequestLogSettings(Path("x.jsonl"), 2 << 20, 1, True)
    argv = SchedulerSpec(port=8001, policy="block").argv(tmp_path)
    assert argv[argv.index("--request-log") + 1] == str(tmp_path / "logs" / "requests-8001.jsonl")
    assert "--log-prompts" not in argv
    off = SchedulerSpec(port=8001, policy="block", request_log_enabled=False, log_prompts=True).argv(tmp_path)
    assert "--no-request-log" in off and "--request-log" not in off


def test_cluster_spec_scheduler_section_takes_request_log_options() -> None:
    data = {"hosts": [{"address": "gpu-a"}], "model": {"id": "tiny"},
            "scheduler": {"request_log": "/var/log/req.jsonl", "request_log_max_mb": 8, "log_prompts": True}}
    s = parse_spec(data).scheduler
    assert (s.request_log, s.request_log_enabled, s.request_log_max_mb, s.log_prompts) == (
        "/var/log/req.jsonl", True, 8, True)
    with pytest.raises(ConfigError, match="request_log_max_mb"):
        parse_spec({**data, "scheduler": {"request_log_max_mb": 0}})
    example = load_spec(Path(spec_module.__file__).parent / "examples" / "cluster.yaml").scheduler
    assert example.request_log_enabled and not example.log_prompts


def test_up_local_passes_request_log_options_to_the_daemons(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[LocalSpec] = []

    def fake_up(spec: LocalSpec, state_dir: Path, **_: Any) -> ClusterState:
        seen.append(spec)
        return ClusterState(kind="local", policy=spec.policy)

    monkeypatch.setattr(local, "up", fake_up)
    result = CliRunner().invoke(app, ["up", "--local", "--state-dir", str(tmp_path), "--no-request-log",
                                      "--request-log-max-mb", "3", "--request-log-backups", "2", "--log-prompts"])
    assert result.exit_code == 0, result.output
    (spec,) = seen
    assert (spec.request_log_enabled, spec.request_log_max_mb, spec.request_log_backups, spec.log_prompts) == (
        False, 3, 2, True)
    result = CliRunner().invoke(app, ["up", "--local", "--state-dir", str(tmp_path),
                                      "--request-log", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    assert seen[1].request_log == str(tmp_path / "r.jsonl") and seen[1].request_log_enabled


def test_cluster_spec_sets_the_daemons_deadlines_and_retries(tmp_path: Path) -> None:
    """scheduler.{predict_timeout_ms, max_retries, first_byte_*, idle_timeout_s, drain_s} in the cluster spec
    reach each daemon's command line, and the daemon's parser reads them back as given."""
    from blockctl.cli.cluster import _scheduler_specs

    data = {"hosts": [{"address": "gpu-a"}], "model": {"id": "tiny"},
            "scheduler": {"predict_timeout_ms": 250, "max_retries": 0, "first_byte_floor_s": 3.5,
                          "first_byte_factor": 6, "idle_timeout_s": 12, "drain_s": 1.5}}
    (spec,) = _scheduler_specs(parse_spec(data))
    args = _parser().parse_args(spec.argv(tmp_path)[3:])  # past "python -m blockctl.scheduler"
    assert (args.predict_timeout_ms, args.max_retries, args.first_byte_floor, args.first_byte_factor,
            args.idle_timeout, args.drain) == (250, 0, 3.5, 6, 12, 1.5)
    defaults = _parser().parse_args(_scheduler_specs(parse_spec({**data, "scheduler": {}}))[0].argv(tmp_path)[3:])
    assert (defaults.max_retries, defaults.first_byte_floor, defaults.drain) == (2, 10.0, 5.0)
    with pytest.raises(ConfigError, match="first_byte_factor"):
        parse_spec({**data, "scheduler": {"first_byte_factor": 0}})
