"""Secrets and files: a request log with prompts is 0600, key and token files others can read are refused,
``--api-key`` on the command line is deprecated."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from blockctl.cluster.schedulers import scheduler_specs
from blockctl.errors import ConfigError
from blockctl.scheduler.__main__ import _api_keys, main
from blockctl.tagger.requestlog import RequestLog, RequestRecord, rotated
from blockctl_agents.predictor.settings import read_token


def _record(prompt: str) -> RequestRecord:
    return RequestRecord(time=1.0, prompt_tokens=3, predicted_output_tokens=4, output_tokens=5, model="m",
                         instance="i", prompt=prompt, source="header")


def test_a_request_log_with_prompts_is_private_from_creation_and_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "requests.jsonl"
    path.parent.mkdir()
    path.write_text("")
    os.chmod(path, 0o644)  # left behind by an older run
    log = RequestLog(path, include_prompt=True, max_bytes=200, backups=2)
    for i in range(4):
        log.append(_record(f"secret prompt number {i} " + "x" * 40))
        log.flush()
    log.close()
    assert "secret prompt" in path.read_text() and rotated(path, 1).exists()
    for p in (path, rotated(path, 1)):
        assert p.stat().st_mode & 0o777 == 0o600, p
    plain = tmp_path / "plain.jsonl"
    old = os.umask(0o022)
    try:
        hashed = RequestLog(plain)
        hashed.append(_record("not written"))
        hashed.close()
    finally:
        os.umask(old)
    assert plain.stat().st_mode & 0o777 == 0o644 and "not written" not in plain.read_text()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_key_and_token_files_readable_by_others_are_refused(tmp_path: Path, mode: int) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-1\nsk-2\n")
    os.chmod(keys, mode)
    with pytest.raises(ConfigError, match="API key file must not be readable by group or others") as info:
        _api_keys([], keys)
    assert str(keys) in info.value.message and info.value.hint == f"chmod 600 {keys}"
    with pytest.raises(ConfigError, match=r"scheduler\.api_key_file"):
        scheduler_specs(1, base_port=1, policy="block", api_key_file=str(keys))
    with pytest.raises(ConfigError, match="token file must not be readable"):
        read_token(keys)
    os.chmod(keys, 0o600)
    assert _api_keys([], keys) == {"sk-1", "sk-2"} and read_token(keys) == "sk-1\nsk-2"


def test_api_key_on_the_command_line_is_deprecated(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, logger="blockctl.scheduler"):
        assert _api_keys(["sk-cli"], None) == {"sk-cli"}
    assert "--api-key is deprecated" in caplog.text and "sk-cli" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="blockctl.scheduler"):
        _api_keys([], None)
    assert "deprecated" not in caplog.text


def test_daemon_refuses_to_start_with_an_open_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-1\n")
    os.chmod(keys, 0o644)
    assert main(["--state-dir", str(tmp_path), "--port", "1", "--api-key-file", str(keys)]) == 2
    assert "must not be readable by group or others" in capsys.readouterr().err


def test_bench_commands_read_the_client_key_from_a_private_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from blockctl.cli.main import app

    key = tmp_path / "key"
    key.write_text("sk-1\n")
    os.chmod(key, 0o644)
    for argv in (["bench", "run", "--endpoint", "http://127.0.0.1:1", "--api-key-file", str(key)],
                 ["bench", "bad-input", "--endpoint", "http://127.0.0.1:1", "--api-key-file", str(key)]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 1, result.output
        assert "must not be readable by group or others" in result.output
