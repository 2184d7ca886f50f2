"""The emulator's reply-length table: a workload prompt gets the workload's own length, with no length sent."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from blockctl import replytable
from blockctl.errors import ConfigError
from blockctl_agents.emulator.__main__ import main
from blockctl_agents.emulator.app import create_app
from blockctl_agents.emulator.lengths import natural_length
from tests.conftest import serve_app


def _table(tmp_path: Path, pairs: list[tuple[str, int]]) -> str:
    path = tmp_path / "replies.json"
    replytable.save(path, replytable.build(pairs), source={"workload": "test"})
    return str(path)


async def test_table_lengths_for_completions_and_chat_prompts_natural_otherwise(tmp_path: Path) -> None:
    table = _table(tmp_path, [("Tell me about the sea.", 37), ("What is a cat?", 5)])
    app = create_app(reply_lengths=table, noise=0.0)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async def usage(path: str, body: dict) -> tuple[int, str]:  # type: ignore[type-arg]
            reply = (await http.post(path, json=body)).json()
            return reply["usage"]["completion_tokens"], reply["choices"][0]["finish_reason"]

        # completions default to 16 tokens (as vLLM's): a client sets a cap, the same for every prompt
        assert await usage("/v1/completions", {"prompt": "Tell me about the sea.", "max_tokens": 900}) == (37, "stop")
        chat = {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "What is a cat?"}]}
        assert await usage("/v1/chat/completions", chat) == (5, "stop")
        assert await usage("/v1/completions", {"prompt": "Tell me about the sea.", "max_tokens": 10}) == (10, "length")
        other = await usage("/v1/completions", {"prompt": "Not in the table", "max_tokens": 4000})
        assert other[0] == natural_length("Not in the table")
    assert app.state.emulator.reply_table_hits == 3


def test_a_bad_table_is_refused_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"lengths": {"ab": 3}}')
    with pytest.raises(ConfigError, match=r"bad\.json"):
        replytable.load(bad)
    assert main(["--reply-lengths", str(bad), "--port", "1"]) == 2
    assert "bad.json" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot read"):
        replytable.load(tmp_path / "missing.json")


def test_a_chat_with_earlier_replies_is_keyed_by_its_whole_conversation() -> None:
    def chat(*texts: str) -> dict[str, object]:
        roles = ["user", "assistant"] * len(texts)
        return {"messages": [{"role": r, "content": t} for r, t in zip(roles, texts, strict=False)]}

    one, two = chat("Write a poem.", "Roses…", "continue"), chat("Explain DNS.", "DNS maps…", "continue")
    assert replytable.client_prompt(one) != replytable.client_prompt(two)  # the same last turn, two conversations
    assert replytable.client_prompt(chat("continue")) == "continue"
    table = replytable.build([(replytable.client_prompt(one) or "", 300), (replytable.client_prompt(two) or "", 40)])
    assert table[replytable.prompt_key(replytable.client_prompt(two) or "")] == 40
