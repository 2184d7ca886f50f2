"""``python -m blockctl_agents.predictor`` start-up checks: token file, engine flags, tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockctl_agents.predictor.__main__ import main
from blockctl_agents.predictor.settings import engine_config_for, read_token

from .helpers import PROFILE


def _args(*extra: str) -> list[str]:
    return ["--engine-url", "http://127.0.0.1:1", "--port", "1", *extra]


def test_world_readable_or_missing_token_file_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    os.chmod(token, 0o644)
    assert main(_args("--token-file", str(token))) == 2
    err = capsys.readouterr().err
    assert "readable by group or others" in err and "chmod 600" in err and "secret" not in err
    assert main(_args("--token-file", str(tmp_path / "absent"))) == 2
    os.chmod(token, 0o600)
    assert read_token(token) == "secret"


def test_bad_engine_flags_and_tokenizer_refuse_to_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args("--max-num-seqs", "0")) == 2
    assert "max-num-seqs" in capsys.readouterr().err
    assert main(_args("--tokenizer", str(tmp_path / "nope"))) == 2
    assert "tokenizer" in capsys.readouterr().err


def test_engine_config_follows_the_engine_flags_like_the_engine() -> None:
    default = engine_config_for(PROFILE)
    assert default == PROFILE.engine_defaults()
    small = engine_config_for(PROFILE, max_num_seqs=8, max_model_len=2048, num_gpu_blocks_override=500)
    assert (small.max_num_seqs, small.max_model_len, small.num_gpu_blocks) == (8, 2048, 500)
    # KV blocks depend on the batch limits, as in vLLM's memory profiling
    bigger_batch = engine_config_for(PROFILE, max_num_batched_tokens=16384)
    assert bigger_batch.num_gpu_blocks == PROFILE.engine_defaults(max_num_batched_tokens=16384).num_gpu_blocks


def test_an_agent_whose_port_is_taken_exits_instead_of_scraping_forever() -> None:
    """uvicorn cancels the lifespan's scrape loop when it cannot bind; with the engine refusing connections,
    asyncio.wait_for (Python 3.11) swallowed that cancellation and the agent lived on, serving nothing."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "blockctl_agents.predictor", "--engine-url", "http://127.0.0.1:1",
             "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode != 0
    assert "address already in use" in proc.stderr
