"""Relay OpenAI requests to the engine while keeping the in-flight table of ``AgentCore`` up to date.

The body is validated (a 400 in OpenAI's shape before anything reaches the engine) and forwarded unchanged.
Connection failures are retried ``connect_retries`` times (nothing was sent yet); any later failure is a 502.
The agent's bearer token is never forwarded; the engine is asked for an uncompressed body so SSE can be read.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from blockctl.errors import BadRequest
from blockctl.openai_api import (
    ENDPOINT_KIND,
    bad_request_response,
    error_response,
    parse_completion_body,
    read_body,
)
from blockctl.predict.lengths import told_length
from blockctl.predict.tracker import DEFAULT_OUTPUT_TOKENS, Tracked, fallback_output_tokens
from blockctl.sse import EventFramer, error_event
from blockctl.tokens import count_prompt_tokens, get_counter
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.sse import SseTokenCounter

H_PREDICTED = "x-blockctl-predicted-output-tokens"
H_QUANTILES = "x-blockctl-predicted-output-quantiles"  # the length's distribution (blockctl.predict.lengths)
H_PROMPT = "x-blockctl-prompt-tokens"
H_E2E_MS, H_TTFT_MS = "x-blockctl-predicted-e2e-ms", "x-blockctl-predicted-ttft-ms"
_DROP_REQUEST = {
    "host",
    "content-length",
    "authorization",
    "connection",
    "accept-encoding",
    "transfer-encoding",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-authorization",
}
_DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def _positive_header(request: Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"header {name} must be an integer, got {raw!r}", param=name) from None
    if value < 1:
        raise BadRequest(f"header {name} must be at least 1, got {value}", param=name)
    return value


def _dispatched(request: Request) -> tuple[float, float] | None:
    """The scheduler's prediction for this request, when it sent both headers (else the agent computes)."""
    try:
        ttft, e2e = float(request.headers[H_TTFT_MS]) / 1e3, float(request.headers[H_E2E_MS]) / 1e3
    except (KeyError, ValueError):
        return None
    return (ttft, e2e) if 0 <= ttft <= e2e < float("inf") else None


def _engine_down(core: AgentCore, exc: Exception, status: int) -> Response:
    url = core.settings.engine_url
    what = "is not reachable" if status == 503 else "failed"
    return error_response(
        status,
        f"engine {url} {what}: {type(exc).__name__}",
        type="service_unavailable" if status == 503 else "bad_gateway",
        code="engine_unavailable" if status == 503 else "engine_error",
        headers={"x-blockctl-hint": f"check the engine: curl {url}/health"},
    )


async def _send(core: AgentCore, client: httpx.AsyncClient, req: httpx.Request) -> httpx.Response:
    """Send with bounded retries on connection failures only; the last failure propagates."""
    retries = core.settings.connect_retries
    for attempt in range(retries + 1):
        try:
            return await client.send(req, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if attempt == retries:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def forward_models(core: AgentCore, client: httpx.AsyncClient) -> Response:
    try:
        resp = await client.get("/v1/models")
    except httpx.HTTPError as exc:
        refused = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return _engine_down(core, exc, 503 if refused else 502)
    drop = _DROP_RESPONSE | {"content-encoding"}
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in drop}
    return Response(resp.content, status_code=resp.status_code, headers=headers)


async def forward_completion(request: Request, core: AgentCore, client: httpx.AsyncClient) -> Response:
    path = request.url.path
    try:
        raw = await read_body(request, core.settings.max_body_bytes)
        body = parse_completion_body(raw, ENDPOINT_KIND[path])
        prompt_tokens = _positive_header(request, H_PROMPT)
        predicted = _positive_header(request, H_PREDICTED)
        limit = body.output_limit()
        told = predicted if predicted is not None else fallback_output_tokens(limit, body.ignore_eos)
        try:
            length = told_length(request.headers.get(H_QUANTILES), default=DEFAULT_OUTPUT_TOKENS,
                                 hinted=predicted is not None, ignore_eos=body.ignore_eos, limit=limit)
        except ValueError as exc:
            raise BadRequest(f"header {H_QUANTILES}: {exc}", param=H_QUANTILES) from None
        if prompt_tokens is None:
            prompt_tokens = max(1, count_prompt_tokens(body, get_counter(core.settings.tokenizer)))
    except BadRequest as exc:
        return bad_request_response(exc)
    except ValueError as exc:
        return error_response(400, str(exc), param="prompt")
    req_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    if req_id in core.tracker.inflight:
        req_id = f"{req_id}-{uuid.uuid4().hex[:8]}"
    now = time.monotonic()
    core.admit(
        Tracked(req_id, now, prompt_tokens, told, stream=body.stream, max_tokens=limit, length_dist=length), now,
        _dispatched(request),
    )
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["accept-encoding"] = "identity"
    upstream = client.build_request("POST", path, content=raw, headers=headers)
    done = False
    try:
        try:
            resp = await _send(core, client, upstream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return _engine_down(core, exc, 503)
        except httpx.HTTPError as exc:
            return _engine_down(core, exc, 502)
        out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _DROP_RESPONSE}
        out_headers["x-blockctl-instance"] = core.settings.name
        if resp.status_code != 200 or not body.stream:
            try:
                data = await resp.aread()
            except httpx.HTTPError as exc:
                return _engine_down(core, exc, 502)
            finally:
                await resp.aclose()
            tokens = _usage_tokens(data) if resp.status_code == 200 else None
            done = True
            core.complete(req_id, time.monotonic(), ok=resp.status_code == 200, output_tokens=tokens)
            out_headers.pop("content-encoding", None)
            return Response(data, status_code=resp.status_code, headers=out_headers)
        done = True  # from here the relay generator owns the request's completion
        return StreamingResponse(
            _relay(core, req_id, resp),
            status_code=resp.status_code,
            headers=out_headers,
            background=BackgroundTask(resp.aclose),
        )
    finally:
        if not done:
            core.complete(req_id, time.monotonic(), ok=False)


async def _relay(core: AgentCore, req_id: str, resp: httpx.Response) -> AsyncIterator[bytes]:
    counter = SseTokenCounter()
    framer = EventFramer()  # whole events only, so an error event after a break starts on a boundary
    ok = False
    try:
        async for chunk in resp.aiter_raw():
            n = counter.feed(chunk)
            if n:
                core.token(req_id, time.monotonic(), n)
            out = framer.feed(chunk)
            if out:
                yield out
        if framer.held:
            yield framer.flush()
        ok = counter.error is None
    except httpx.HTTPError as exc:
        yield error_event(f"engine stream broke: {type(exc).__name__}", type="bad_gateway", code="engine_error")
    finally:
        # A client may close as soon as it reads [DONE] (blockctl's load generator does), before upstream EOF:
        # the stream was complete all the same.
        ok = ok or (counter.done and counter.error is None)
        core.complete(req_id, time.monotonic(), ok=ok, output_tokens=counter.usage_completion_tokens)
        if not resp.is_closed:  # the client left mid-stream: close upstream so the engine aborts the request
            _close_later(resp)


_closing: set[asyncio.Task[None]] = set()


def _close_later(resp: httpx.Response) -> None:
    """Close ``resp`` in a background task (a generator being finalised cannot await)."""
    try:
        task = asyncio.get_running_loop().create_task(resp.aclose())
    except RuntimeError:  # no loop left (interpreter shutdown): nothing to release
        return
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _usage_tokens(data: bytes) -> int | None:
    try:
        usage = json.loads(data).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None
