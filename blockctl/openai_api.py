"""The OpenAI-compatible request surface: validated completion/chat bodies and OpenAI's error JSON.

Validation is strict (a string where a number belongs is a 400, not coerced); unknown fields are ignored, as
vLLM does. Only what every blockctl server needs is checked here; limits that depend on an instance (model
length, served model name) are checked by the server that knows them.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from blockctl.errors import BadRequest

__all__ = [
    "ENDPOINT_KIND",
    "BadRequest",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "Kind",
    "StreamOptions",
    "bad_request_response",
    "bearer_matches",
    "error_response",
    "http_error_handlers",
    "loads_json",
    "parse_completion_body",
    "read_body",
]

Kind = Literal["completions", "chat"]
ENDPOINT_KIND: dict[str, Kind] = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}

_STRICT = ConfigDict(strict=True, extra="ignore")


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False  # one last chunk with ``usage`` and no choices
    continuous_usage_stats: bool = False  # vLLM extension: accepted, not emitted


class ContentPart(BaseModel):
    model_config = _STRICT
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class _Sampling(BaseModel):
    """Fields shared by both endpoints; sampling knobs are validated and otherwise ignored by the emulator."""

    model_config = _STRICT
    model: str | None = None  # vLLM allows it missing: the first served model name
    max_tokens: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM extension: generate exactly the token limit
    min_tokens: int = Field(default=0, ge=0)  # vLLM extension

    def output_limit(self) -> int | None:
        """The most tokens the client allows in the reply (None: up to the model length)."""
        return self.max_tokens

    def _limit_field(self) -> str:
        return "max_tokens"

    @model_validator(mode="after")
    def _check_common(self) -> _Sampling:
        if self.n != 1:
            raise ValueError("n: only n=1 is supported")
        limit, name = self.output_limit(), self._limit_field()
        if limit is not None and limit < 1:
            raise ValueError(f"{name}: must be at least 1, got {limit}")
        if limit is not None and self.min_tokens > limit:
            raise ValueError(f"min_tokens: must be at most {name} ({limit}), got {self.min_tokens}")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        return self


class CompletionRequest(_Sampling):
    """A ``/v1/completions`` body; ``prompt`` is one string or one list of token ids (n=1)."""

    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16  # OpenAI's and vLLM's default for completions
    echo: bool = False
    logprobs: int | None = None

    @model_validator(mode="after")
    def _check_prompt(self) -> CompletionRequest:
        p = self.prompt
        if isinstance(p, list) and p and not isinstance(p[0], int):
            if len(p) != 1:
                raise ValueError("prompt: only one prompt per request is supported")
            p = p[0]
        if len(p) == 0:
            raise ValueError("prompt: must not be empty")
        bad = _bad_token_id(p) if isinstance(p, list) and isinstance(p[0], int) else None
        if bad is not None:
            raise ValueError(f"prompt: token id {bad} is out of vocabulary")
        return self


def _bad_token_id(ids: list[int]) -> int | None:
    """The first id outside [0, MAX_TOKEN_ID], or None (min/max first: C speed for the usual good prompt)."""
    if min(ids) >= 0 and max(ids) <= MAX_TOKEN_ID:
        return None
    return next(t for t in ids if not 0 <= t <= MAX_TOKEN_ID)


class ChatCompletionRequest(_Sampling):
    """A ``/v1/chat/completions`` body; ``max_completion_tokens`` wins over the older ``max_tokens``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False

    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def _limit_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
MAX_TOKEN_ID = 2**31 - 1  # no vocabulary is larger; the engine checks its own size
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _lone_surrogate(data: Any) -> bool:
    """Whether any string (key or value) in ``data`` holds a lone UTF-16 surrogate (not encodable as UTF-8)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads_json(raw: bytes) -> Any:
    """Parse a request body as strict JSON (RFC 8259); BadRequest for anything else.

    Refused: invalid UTF-8, ``NaN``/``Infinity`` (Python's json would accept them), nesting deeper than the
    interpreter's recursion limit (RecursionError), and lone surrogate escapes such as ``"\\ud800"``, which
    decode to strings no UTF-8 encoder (tokenizer, log, hash) accepts.
    """
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw) and _lone_surrogate(data):
        raise BadRequest("request body holds a lone UTF-16 surrogate (\\ud800-\\udfff): not valid Unicode")
    return data


def parse_completion_body(raw: bytes, kind: Kind) -> CompletionRequest | ChatCompletionRequest:
    """Validate a raw request body for ``kind``; BadRequest (param = the offending field) if invalid."""
    data = loads_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    model = CompletionRequest if kind == "completions" else ChatCompletionRequest
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        param: str | None
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc:  # a field's own error: name the field (with list indices) and what it should be
            path = ".".join(p for p in loc if "[" not in p and p not in _UNION_TAGS)
            param = loc[0]
            msg = f"{path or param}: {msg}"
        else:  # a cross-field check, worded "field: problem"
            param = msg.split(":", 1)[0] if ":" in msg else None
        raise BadRequest(msg, param=param) from None


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}`` with the given status."""
    body: dict[str, Any] = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def bad_request_response(exc: BadRequest) -> JSONResponse:
    """Render a BadRequest; 404s get OpenAI's ``NotFoundError`` type, everything else is a request error."""
    kind = "NotFoundError" if exc.status == 404 else "invalid_request_error"
    return error_response(exc.status, exc.message, type=kind, param=exc.param, code=exc.code)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; BadRequest 413 once it exceeds ``limit`` bytes (checked before reading it all)."""
    declared = request.headers.get("content-length", "")
    too_large = BadRequest(f"request body larger than {limit} bytes", status=413, code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_matches(authorization: str, keys: Iterable[bytes]) -> bool:
    """Whether an ``Authorization`` header carries one of ``keys`` as a Bearer token.

    The scheme is case-insensitive (RFC 9110 §11.1): ``Bearer``, ``bearer`` and ``BEARER`` are the same.
    Every key is compared in constant time.
    """
    scheme, _, token = authorization.partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found and given != b""


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method) as OpenAI's error JSON, not plain text."""
    assert isinstance(exc, HTTPException)
    kind = "NotFoundError" if exc.status_code == 404 else "invalid_request_error"
    message = str(exc.detail)
    if exc.status_code in (404, 405):
        message = f"{message}: {request.method} {request.url.path}"
    return error_response(exc.status_code, message, type=kind, headers=dict(exc.headers or {}))


async def _crash(request: Request, exc: Exception) -> Response:
    return error_response(500, f"internal server error ({type(exc).__name__})", type="server_error")


def http_error_handlers(*, crash: bool = True) -> dict[Any, Any]:
    """Starlette ``exception_handlers`` so every answer is OpenAI's error JSON: 404/405 and (``crash``) 500."""
    handlers: dict[Any, Any] = {HTTPException: _http_error}
    if crash:
        handlers[Exception] = _crash
    return handlers
