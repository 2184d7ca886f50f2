"""The OpenAI wire format of the load generator: request bodies and headers, SSE stream accounting."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from blockctl.bench.workloads import WorkItem, synth_prompt
from blockctl.tokens import flatten_messages, get_counter

APIS = ("completions", "chat")
HINT_HEADER = "x-blockctl-output-tokens"  # the true length, for oracle experiments (--lengths oracle)
# What the load generator tells the server about each reply's length:
#   none   nothing per request (production): the engine decides (an emulator with a reply-length table replies
#          with the workload's length; see blockctl.replytable), the router predicts it (tagger or fallback).
#          Every request carries the same max_tokens, the workload's longest reply, as a client sets a
#          generous cap (vLLM's completions default is 16 tokens);
#   oracle the true length: max_tokens = it with ignore_eos, and the x-blockctl-output-tokens header.
LENGTH_MODES = ("none", "oracle")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """How to talk to the endpoint. ``concurrency`` set: closed loop with that many workers, no schedule."""

    endpoint: str  # base URL, with or without a trailing /v1
    model: str
    api: str = "completions"  # completions | chat
    api_key: str | None = None
    lengths: str = "none"  # LENGTH_MODES
    max_tokens_cap: int | None = None  # lengths="none": max_tokens of every request (run_load: longest reply)
    concurrency: int | None = None
    request_timeout_s: float = 600.0
    seed: int = 0  # for synthesised prompts


def base_url(endpoint: str) -> str:
    url = endpoint.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def prompt_text(item: WorkItem, index: int, spec: LoadSpec) -> str:
    """The workload's text, or one synthesised to ``prompt_tokens`` tokens as the server will count it."""
    if item.prompt is not None:
        return item.prompt
    tokens = item.prompt_tokens
    if spec.api == "chat":  # the chat flattening adds role markers; leave room for them
        overhead = get_counter().count(flatten_messages([{"role": "user", "content": ""}]))
        tokens = max(1, tokens - overhead)
    return synth_prompt(tokens, seed=spec.seed * 1_000_003 + index)


def request_body(item: WorkItem, prompt: str, spec: LoadSpec) -> dict[str, Any]:
    """The JSON body: streamed, with usage; with ``lengths="oracle"`` the reference length is forced
    (max_tokens + ignore_eos), else no length information at all."""
    body: dict[str, Any] = {"model": spec.model}
    if spec.lengths == "oracle":
        body.update(max_tokens=item.output_tokens, ignore_eos=True)
    elif spec.max_tokens_cap is not None:
        body["max_tokens"] = spec.max_tokens_cap
    body.update(temperature=0.0, stream=True, stream_options={"include_usage": True})
    if spec.api == "chat" and item.messages:  # a multi-turn replay: the conversation so far, as a client sends it
        body["messages"] = [{"role": role, "content": text} for role, text in item.messages]
    elif spec.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def request_headers(item: WorkItem, spec: LoadSpec) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if spec.api_key:
        headers["authorization"] = f"Bearer {spec.api_key}"
    if spec.lengths == "oracle":
        headers[HINT_HEADER] = str(item.output_tokens)
    return headers


@dataclass(slots=True)
class StreamState:
    """What one SSE stream has delivered so far; fed one ``data:`` payload at a time by :func:`feed`."""

    token_times: list[float]  # arrival of every chunk with choices (vLLM's bench client's events, see feed)
    text_chunks: int = 0  # chunks that carried text: the token count when the server reports no usage
    usage_prompt: int | None = None
    usage_completion: int | None = None
    error: str | None = None
    done: bool = False


def feed(state: StreamState, payload: str, now: float) -> None:
    """Account one SSE ``data:`` payload received at ``now``.

    Token events are counted as vLLM's own bench client (``vllm bench serve``, 0.32) counts them: every chunk
    with a non-empty ``choices`` list is one event, whether or not it carries text (real vLLM sends empty-text
    chunks, and a chat stream's role chunk). TTFT is the first event, and every later one adds an
    inter-token gap, so ITL counts and percentiles agree with vLLM's. A usage-only chunk is no event.
    """
    if payload == "[DONE]":
        state.done = True
        return
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        state.error = "malformed stream chunk"
        return
    if not isinstance(chunk, dict):
        return
    if "error" in chunk:
        err = chunk["error"]
        state.error = str(err.get("message", err) if isinstance(err, dict) else err)
        return
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        state.usage_prompt = usage.get("prompt_tokens", state.usage_prompt)
        state.usage_completion = usage.get("completion_tokens", state.usage_completion)
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list):
        return
    state.token_times.append(now)
    choice = choices[0]
    if isinstance(choice, dict):
        text = choice.get("text")
        if text is None:
            text = (choice.get("delta") or {}).get("content")
        if text:
            state.text_chunks += 1


def error_message(status: int, body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()[:200]
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"
