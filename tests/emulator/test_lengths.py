"""Reply lengths and admission: deterministic per prompt, ShareGPT-like overall, learnable from cue words."""

from __future__ import annotations

import math
import statistics

import pytest

from blockctl.openai_api import BadRequest, parse_completion_body
from blockctl_agents.emulator.admission import admit, check_model
from blockctl_agents.emulator.lengths import BASE_MEDIAN, MAX_NATURAL, SIGMA, cue_factor, natural_length, output_length


def test_same_prompt_same_length_different_prompts_spread() -> None:
    assert natural_length("What is a cat?") == natural_length("What is a cat?")
    assert natural_length("", [1, 2, 3]) == natural_length("", [1, 2, 3])
    lengths = [natural_length(f"question number {i} about topic {i % 7}") for i in range(4000)]
    assert all(1 <= n <= MAX_NATURAL for n in lengths)
    median = statistics.median(lengths)
    assert abs(math.log(median / BASE_MEDIAN)) < 0.1
    spread = statistics.pstdev(math.log(n) for n in lengths)
    assert abs(spread - SIGMA) < 0.05


def test_cue_words_shift_the_median() -> None:
    assert cue_factor("Write a detailed essay on Rome") > 2
    assert cue_factor("Answer yes or no, briefly") < 0.3
    assert cue_factor("What's the weather") == 1.0
    long = statistics.median(natural_length(f"Please explain topic {i} in a detailed essay") for i in range(500))
    short = statistics.median(natural_length(f"Topic {i}: answer briefly") for i in range(500))
    assert long > 4 * BASE_MEDIAN > 20 * short


@pytest.mark.parametrize(
    ("natural", "limit", "ignore_eos", "min_tokens", "expected"),
    [
        (50, 100, False, 0, (50, "stop")),
        (150, 100, False, 0, (100, "length")),
        (100, 100, False, 0, (100, "length")),
        (50, 100, True, 0, (100, "length")),
        (10, 100, False, 30, (30, "stop")),
    ],
)
def test_output_length(natural: int, limit: int, ignore_eos: bool, min_tokens: int, expected: tuple[int, str]) -> None:
    assert output_length(natural, limit, ignore_eos=ignore_eos, min_tokens=min_tokens) == expected


def _body(raw: bytes, kind: str = "completions"):  # type: ignore[no-untyped-def]
    return parse_completion_body(raw, kind)  # type: ignore[arg-type]


def test_admit_limits_by_model_length() -> None:
    chat = _body(b'{"messages": [{"role": "user", "content": "x"}], "ignore_eos": true}', "chat")
    adm = admit(chat, [1] * 100, "user: x", max_model_len=300)
    assert (adm.prompt_tokens, adm.output_tokens, adm.finish_reason) == (100, 200, "length")
    with pytest.raises(BadRequest, match="maximum context length is 300") as info:
        admit(_body(b'{"prompt": "x", "max_tokens": 201}'), [1] * 100, "x", max_model_len=300)
    assert info.value.param == "max_tokens"
    with pytest.raises(BadRequest) as info:
        admit(_body(b'{"prompt": "x", "max_tokens": 1}'), [1] * 300, "x", max_model_len=300)
    assert info.value.param == "prompt"


def test_admit_same_prompt_same_salt() -> None:
    body = _body(b'{"prompt": "hello", "max_tokens": 4000}')
    a, b = admit(body, [1, 2], "hello", 8192), admit(body, [1, 2], "hello", 8192)
    assert a == b and a.output_tokens == natural_length("hello")


def test_check_model() -> None:
    check_model(None, ("a",))
    check_model("b", ("a", "b"))
    with pytest.raises(BadRequest) as info:
        check_model("c", ("a",))
    assert info.value.status == 404


def test_synthetic_text_is_deterministic_and_json_safe() -> None:
    import json

    from blockctl_agents.emulator.text import render, render_json, token_json

    assert render(42, 0, 5) == render(42, 0, 5) != render(43, 0, 5)
    assert len(render(42, 0, 5).split()) == 5
    assert json.loads(b'"' + render_json(42, 0, 5) + b'"') == render(42, 0, 5)
    assert b"".join(token_json(42, i) for i in range(5)) == render_json(42, 0, 5)
