"""The completion handlers: admit a request, then stream its tokens as SSE or wait for the whole reply."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from blockctl.errors import BadRequest, EngineError
from blockctl.openai_api import (
    ENDPOINT_KIND,
    bad_request_response,
    error_response,
    parse_completion_body,
)
from blockctl.tokens import prompt_text, prompt_token_ids
from blockctl_agents.emulator.admission import admit, check_model
from blockctl_agents.emulator.responses import DONE, ResponseWriter
from blockctl_agents.emulator.runner import EngineRunner, Tracked
from blockctl_agents.emulator.state import Emulator
from blockctl_agents.emulator.text import render, token_json


async def completions(request: Request) -> Response:
    """``/v1/completions`` and ``/v1/chat/completions``."""
    emu: Emulator = request.app.state.emulator
    refusal = emu.refusal()
    if refusal is not None:
        return refusal
    kind = ENDPOINT_KIND[request.url.path]
    raw = await request.body()
    try:
        body = parse_completion_body(raw, kind)
        check_model(body.model, emu.settings.served_model_name)
        ids = prompt_token_ids(body, emu.counter)
        adm = admit(body, ids, prompt_text(body), emu.config.max_model_len)
        writer = ResponseWriter(kind, body.model or emu.model_name)  # vLLM echoes the served name asked for
        tr = emu.runner.submit(writer.id, adm.prompt_tokens, adm.output_tokens, adm.finish_reason,
                               adm.salt, notify_tokens=body.stream, token_ids=ids)
    except BadRequest as exc:
        return bad_request_response(exc)
    except EngineError as exc:  # e.g. the prompt needs more KV blocks than the instance has
        return error_response(400, exc.message, param="prompt")
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_stream(emu.runner, tr, writer, usage), media_type="text/event-stream")
    return await _whole(request, emu, tr, writer)


async def _wait_closed(tr: Tracked) -> None:
    while not tr.closed:
        tr.wake.clear()
        await tr.wake.wait()


async def _whole(request: Request, emu: Emulator, tr: Tracked, writer: ResponseWriter) -> Response:
    """Wait for the reply, or for the client to go away (then the request is aborted and its blocks freed)."""
    closed = asyncio.ensure_future(_wait_closed(tr))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((closed, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (closed, gone):
            fut.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fut
        emu.runner.abort(tr)  # no-op when it finished
    if not tr.done:
        return emu.refusal() or error_response(503, "request aborted", type="server_error")
    req = tr.req
    text = render(tr.salt, 0, req.output_tokens)
    return JSONResponse(writer.full(text, tr.finish_reason, req.prompt_tokens, req.output_tokens))


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream(
    runner: EngineRunner, tr: Tracked, writer: ResponseWriter, usage: bool
) -> AsyncIterator[bytes]:
    """One SSE chunk per token (several tokens ready at once go out in one write), then usage and [DONE].

    A client that disconnects cancels this generator; ``finally`` then aborts the request in the engine.
    """
    total, salt, sent = tr.req.output_tokens, tr.salt, 0
    try:
        while True:
            n = tr.produced
            if n > sent:
                last = min(n, total - 1)
                # vLLM sends a chat stream's role-only chunk with the first token, not at admission: a client
                # timing TTFT to the first chunk (vLLM's bench client does) must see queueing and prefill.
                role = [writer.role_chunk()] if sent == 0 and writer.kind == "chat" else []
                parts = role + [writer.token_chunk(token_json(salt, i)) for i in range(sent, last)]
                if n == total:
                    parts.append(writer.finish_chunk(render(salt, total - 1, total), tr.finish_reason))
                sent = n
                yield b"".join(parts)
            if tr.done:
                break
            if tr.aborted:  # the server is stopping
                yield writer.finish_chunk("", "abort")
                break
            tr.wake.clear()
            await tr.wake.wait()
        if usage:
            yield writer.usage_chunk(tr.req.prompt_tokens, sent)
        yield DONE
    finally:
        runner.abort(tr)
