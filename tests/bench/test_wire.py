"""SSE accounting and request building of the load generator, on plain values."""

from __future__ import annotations

from blockctl.bench.wire import (
    LoadSpec,
    StreamState,
    base_url,
    error_message,
    feed,
    prompt_text,
    request_body,
)
from blockctl.bench.workloads import WorkItem
from blockctl.tokens import count_prompt_tokens


def test_feed_counts_events_as_vllms_bench_client_usage_errors_and_done() -> None:
    st = StreamState(token_times=[])
    feed(st, '{"choices": [{"delta": {"role": "assistant", "content": ""}}]}', 1.0)  # role chunk: an event
    feed(st, '{"choices": [{"delta": {"content": "Hi"}}]}', 2.0)
    feed(st, '{"choices": [{"delta": {"content": ""}}]}', 2.5)  # empty text (vLLM sends these): an event
    feed(st, '{"choices": [{"text": " there", "finish_reason": "length"}]}', 3.0)
    feed(st, '{"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}', 3.5)  # no event
    feed(st, "[DONE]", 4.0)
    assert st.token_times == [1.0, 2.0, 2.5, 3.0] and st.text_chunks == 2
    assert (st.usage_prompt, st.usage_completion) == (9, 2) and st.done
    bad = StreamState(token_times=[])
    feed(bad, '{"error": {"message": "KV cache full", "code": 500}}', 1.0)
    assert bad.error == "KV cache full"
    junk = StreamState(token_times=[])
    feed(junk, "{not json", 1.0)
    assert junk.error == "malformed stream chunk"


def test_error_message_prefers_openai_error_json() -> None:
    assert error_message(400, b'{"error": {"message": "prompt too long"}}') == "HTTP 400: prompt too long"
    assert error_message(502, b"Bad Gateway") == "HTTP 502: Bad Gateway"
    assert error_message(503, b"") == "HTTP 503"


def test_bodies_force_the_length_and_chat_prompts_keep_the_token_count() -> None:
    assert base_url("http://h:1/v1/") == "http://h:1" and base_url("http://h:1") == "http://h:1"
    item = WorkItem(None, 40, 17)
    for api in ("completions", "chat"):
        spec = LoadSpec(endpoint="http://h", model="m", api=api)
        body = request_body(item, prompt_text(item, 3, spec), spec)
        assert body["max_tokens"] == 17 and body["ignore_eos"] is True and body["stream"] is True
        assert count_prompt_tokens(body) == 40  # what the scheduler, agents and emulator will count
