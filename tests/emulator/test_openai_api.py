"""Request validation: what the OpenAI surface accepts, and the 400s (with the field named) it refuses."""

from __future__ import annotations

import json

import pytest

from blockctl.openai_api import (
    BadRequest,
    ChatCompletionRequest,
    CompletionRequest,
    bad_request_response,
    error_response,
    parse_completion_body,
)


def _parse(body: object, kind: str = "completions") -> CompletionRequest | ChatCompletionRequest:
    return parse_completion_body(json.dumps(body).encode(), kind)  # type: ignore[arg-type]


def test_completion_defaults_follow_openai() -> None:
    req = _parse({"model": "m", "prompt": "hello"})
    assert isinstance(req, CompletionRequest)
    assert req.output_limit() == 16 and not req.stream and not req.ignore_eos and req.n == 1


def test_chat_max_completion_tokens_wins_and_unknown_fields_ignored() -> None:
    req = _parse(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "max_completion_tokens": 3,
         "frequency_penalty": 0.5, "stream": True, "stream_options": {"include_usage": True}},
        "chat",
    )
    assert isinstance(req, ChatCompletionRequest)
    assert req.output_limit() == 3 and req.stream_options is not None and req.stream_options.include_usage


def test_chat_without_limit_is_unbounded() -> None:
    assert _parse({"messages": [{"role": "user", "content": "hi"}]}, "chat").output_limit() is None


@pytest.mark.parametrize(
    ("body", "kind", "param"),
    [
        ({"prompt": "x", "max_tokens": "5"}, "completions", "max_tokens"),
        ({"prompt": "x", "max_tokens": 2.5}, "completions", "max_tokens"),
        ({"prompt": 5}, "completions", "prompt"),
        ({}, "completions", "prompt"),
        ({"prompt": ""}, "completions", "prompt"),
        ({"prompt": ["a", "b"]}, "completions", "prompt"),
        ({"prompt": "x", "max_tokens": -1}, "completions", "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, "completions", "max_tokens"),
        ({"prompt": "x", "n": 2}, "completions", "n"),
        ({"prompt": "x", "stream": "yes"}, "completions", "stream"),
        ({"prompt": "x", "temperature": 3}, "completions", "temperature"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, "completions", "stream_options"),
        ({"prompt": "x", "max_tokens": 4, "min_tokens": 5}, "completions", "min_tokens"),
        ({"messages": []}, "chat", "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "chat", "messages"),
        ({"messages": [{"content": "x"}]}, "chat", "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}, "chat",
         "max_completion_tokens"),
    ],
)
def test_bad_bodies_name_the_field(body: object, kind: str, param: str) -> None:
    with pytest.raises(BadRequest) as info:
        _parse(body, kind)
    assert info.value.param == param
    assert info.value.status == 400
    assert info.value.message.startswith(param)


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_non_object_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="JSON"):
        parse_completion_body(raw, "chat")


def test_error_response_has_openai_shape() -> None:
    resp = error_response(400, "bad", param="max_tokens")
    assert resp.status_code == 400
    assert json.loads(bytes(resp.body)) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "max_tokens", "code": None}
    }
    nf = bad_request_response(BadRequest("no such model", param="model", status=404, code="model_not_found"))
    assert nf.status_code == 404 and json.loads(bytes(nf.body))["error"]["type"] == "NotFoundError"
