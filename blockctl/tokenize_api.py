"""vLLM's ``POST /tokenize`` on blockctl's servers (the emulator and the scheduler): one implementation."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse, Response

from blockctl.openai_api import error_response
from blockctl.tokens import TokenCounter, prompt_token_ids


def tokenize_response(raw: bytes, counter: TokenCounter, max_model_len: int | None) -> Response:
    """``{"prompt": str}`` or ``{"messages": [...]}`` -> ``{count, max_model_len, tokens, token_strs}``, as
    vLLM answers (``token_strs`` is null: blockctl does not decode); 400 with OpenAI's error JSON otherwise."""
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or ("prompt" in body) == ("messages" in body):
            raise ValueError("body must be a JSON object with either 'prompt' or 'messages'")
        if "prompt" in body and not isinstance(body["prompt"], str):
            raise ValueError("prompt: must be a string")
        if "messages" in body and not (isinstance(body["messages"], list) and
                                       all(isinstance(m, dict) for m in body["messages"])):
            raise ValueError("messages: must be a list of objects")
        ids = prompt_token_ids(body, counter)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        return error_response(400, str(exc))
    return JSONResponse({"count": len(ids), "max_model_len": max_model_len, "tokens": ids, "token_strs": None})


def max_model_len(models_body: bytes | None) -> int | None:
    """``max_model_len`` of the first model in a vLLM ``/v1/models`` body, else None."""
    try:
        value = json.loads(models_body or b"")["data"][0]["max_model_len"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return value if isinstance(value, int) else None
