"""An engine that requires an API key (vLLM's --api-key, the emulator's too) behind an agent that sends it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from blockctl_agents.emulator.app import create_app as create_emulator
from blockctl_agents.predictor.__main__ import main as agent_main
from blockctl_agents.predictor.app import create_app
from tests.conftest import serve_app

from .helpers import PROFILE, TOKEN, settings

KEY = "engine-key-42"


async def test_agent_sends_the_engine_key_and_the_engine_refuses_without_it() -> None:
    async with serve_app(create_emulator(max_num_seqs=4, api_key=KEY)) as engine:
        async with httpx.AsyncClient(base_url=engine, timeout=30) as direct:
            body = {"prompt": "hi", "max_tokens": 3}
            denied = await direct.post("/v1/completions", json=body)
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
            wrong = await direct.post("/v1/completions", json=body, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert (await direct.get("/health")).status_code == 200  # as vLLM: only /v1 routes need the key
            assert (await direct.get("/metrics")).status_code == 200
        agent_settings = dataclasses.replace(settings(engine), engine_api_key=KEY)
        async with serve_app(create_app(agent_settings, PROFILE.model)) as agent, httpx.AsyncClient(
            base_url=agent, timeout=30, headers={"authorization": f"Bearer {TOKEN}"}
        ) as http:
            ok = await http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3})
            assert ok.status_code == 200, ok.text
            assert (await http.get("/v1/models")).status_code == 200


def test_agent_refuses_an_engine_key_file_others_can_read(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "engine_key"
    key.write_text(KEY)
    os.chmod(key, 0o644)
    assert agent_main(["--engine-url", "http://127.0.0.1:1", "--port", "1", "--engine-api-key-file", str(key)])
    assert "engine API key file must not be readable by group or others" in capsys.readouterr().err


def test_emulator_takes_the_key_from_vllm_api_key(tmp_path: Path) -> None:
    code = ("from blockctl_agents.emulator.__main__ import parse_args; "
            "print(parse_args(['--port', '1'])[0].api_key)")
    env = {**os.environ, "VLLM_API_KEY": KEY}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == KEY, out.stderr
