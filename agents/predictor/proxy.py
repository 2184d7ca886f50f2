"""Relay OpenAI requests to the engine while keeping the in-flight table of ``AgentCore`` up to date.

The body is validated (a 400 in OpenAI's shape before anything reaches the engine) and forwarded unchanged.
Refused connections are retried ``connect_retries`` times (nothing was sent yet); any later failure is a 502.
The agent's bearer token is never forwarded; the engine is asked for an uncompressed body so SSE can be read.

At most once: a 503 with ``x-blockctl-unstarted`` tells the scheduler the engine did not run the request
(never sent, or aborted there before any byte came back — engine declared sick, agent draining), so it may
go elsewhere; a 502 means it may have run and must not be replayed. When the caller goes away, the engine
request is aborted (its connection closed), streamed or not. A stream cut after it started ends with an SSE
error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from blockctl.errors import BadRequest, UpstreamError
from blockctl.openai_api import (
    ENDPOINT_KIND,
    bad_request_response,
    error_response,
    parse_completion_body,
    read_body,
)
from blockctl.predict.lengths import QUANTILES_HEADER, told_length
from blockctl.predict.tracker import DEFAULT_OUTPUT_TOKENS, Tracked, fallback_output_tokens
from blockctl.scheduler.call import UNSTARTED_HEADER, Call
from blockctl.scheduler.http1 import Http1Pool, Stream
from blockctl.sse import EventFramer, error_event
from blockctl.tokens import get_counter, prompt_token_ids
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.health import EngineHealth
from blockctl_agents.predictor.sse import SseTokenCounter

log = logging.getLogger("blockctl.agent")

H_PREDICTED = "x-blockctl-predicted-output-tokens"
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


@dataclass(slots=True)
class Upstream:
    """The agent's side of its engine: the forwarding pool, the engine's health and the requests in flight
    (one abort switch each: a sick engine or a drain deadline cuts them all)."""

    pool: Http1Pool
    health: EngineHealth
    body_timeout_s: float = 30.0
    flights: dict[str, Call] = field(default_factory=dict)

    def abort_all(self, reason: str) -> int:
        calls = list(self.flights.values())
        for call in calls:
            call.abort(reason)
        return len(calls)


def _engine_down(core: AgentCore, message: str, status: int, *, unstarted: str | None = None) -> Response:
    url = core.settings.engine_url
    headers = {"x-blockctl-hint": f"check the engine: curl {url}/health"}
    if unstarted is not None:
        headers[UNSTARTED_HEADER] = unstarted
    return error_response(
        status,
        f"engine {url}: {message}",
        type="service_unavailable" if status == 503 else "bad_gateway",
        code="engine_unavailable" if status == 503 else "engine_error",
        headers=headers,
    )


def _unstarted(core: AgentCore, reason: str) -> Response:
    """The request did not run on the engine (never sent, or aborted there before any byte came back)."""
    return _engine_down(core, f"request not run: {reason}", 503, unstarted=reason)


async def forward_models(core: AgentCore, client: httpx.AsyncClient) -> Response:
    try:
        resp = await client.get("/v1/models")
    except httpx.HTTPError as exc:
        refused = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return _engine_down(core, type(exc).__name__, 503 if refused else 502)
    drop = _DROP_RESPONSE | {"content-encoding"}
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in drop}
    return Response(resp.content, status_code=resp.status_code, headers=headers)


async def _open(core: AgentCore, up: Upstream, path: str, raw: bytes, headers: dict[str, str],
                call: Call) -> Stream:
    """Send with bounded retries while nothing was sent (connection refused); UpstreamError otherwise."""
    retries = core.settings.connect_retries
    for attempt in range(retries + 1):
        try:
            return await up.pool.stream("POST", path, raw, headers, call)
        except UpstreamError as exc:
            if exc.sent or attempt == retries or call.reason is not None:
                raise
        await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def forward_completion(request: Request, core: AgentCore, up: Upstream) -> Response:
    # The request's clock starts as it enters the agent: reading, validating and tokenizing it are part of the
    # TTFT its caller sees, so the first-token learner must see them too.
    arrived = time.monotonic()
    path = request.scope["path"]  # not request.url: it builds a whole URL
    try:
        async with asyncio.timeout(up.body_timeout_s):
            raw = await read_body(request, core.settings.max_body_bytes)
    except TimeoutError:
        return error_response(408, f"request body not received within {up.body_timeout_s:.0f} s")
    except BadRequest as exc:
        return bad_request_response(exc)
    try:
        body = parse_completion_body(raw, ENDPOINT_KIND[path])
        prompt_tokens = _positive_header(request, H_PROMPT)
        predicted = _positive_header(request, H_PREDICTED)
        limit = body.output_limit()
        told = predicted if predicted is not None else fallback_output_tokens(limit, body.ignore_eos)
        try:
            length = told_length(request.headers.get(QUANTILES_HEADER), default=DEFAULT_OUTPUT_TOKENS,
                                 hinted=predicted is not None, ignore_eos=body.ignore_eos, limit=limit)
        except ValueError as exc:
            raise BadRequest(f"header {QUANTILES_HEADER}: {exc}", param=QUANTILES_HEADER) from None
        token_ids = prompt_token_ids(body, get_counter(core.settings.tokenizer))  # the shadow cache hashes them
        if prompt_tokens is None:
            prompt_tokens = max(1, len(token_ids))
    except BadRequest as exc:
        return bad_request_response(exc)
    except ValueError as exc:
        return error_response(400, str(exc), param="prompt")
    refused = up.health.unavailable()
    if refused is not None:
        return _unstarted(core, refused)
    req_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    if req_id in core.tracker.inflight:
        req_id = f"{req_id}-{uuid.uuid4().hex[:8]}"
    now = time.monotonic()
    hashes = core.shadow.hashes(token_ids)
    core.admit(
        Tracked(req_id, arrived, prompt_tokens, told, stream=body.stream, max_tokens=limit, length_dist=length), now,
        _dispatched(request), hashes,
    )
    core.cache_prompt(req_id, len(token_ids), hashes)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["accept-encoding"] = "identity"
    if core.settings.engine_api_key:  # the agent's own token is never forwarded; the engine's key is set here
        headers["authorization"] = f"Bearer {core.settings.engine_api_key}"
    call = up.flights[req_id] = Call()
    # Until the reply starts, a caller that goes away aborts the engine request (Starlette cuts a streamed
    # reply by itself once it runs).
    gone = asyncio.ensure_future(_disconnected(request))
    gone.add_done_callback(lambda t: None if t.cancelled() else call.abort("the caller went away"))
    relaying = False
    try:
        try:
            resp = await _open(core, up, path, raw, headers, call)
        except UpstreamError as exc:
            if not exc.sent:
                reason = call.reason or f"cannot connect ({exc.message})"
                if call.reason is None and up.health.failed(f"forward refused: {exc.message}", time.monotonic()):
                    log.warning("engine unhealthy: %s", exc.message)
                return _unstarted(core, reason)
            return _aborted(core, call) or await _broken(core, up, exc)
        out_headers = {k: v for k, v in resp.head.headers.items() if k not in _DROP_RESPONSE}
        out_headers["x-blockctl-instance"] = core.settings.name
        out_headers.pop("content-encoding", None)
        try:
            if resp.status != 200 or not body.stream:
                data = await resp.read()
            else:
                rest = resp.chunks()
                first = await anext(rest, b"")
        except UpstreamError as exc:
            return _aborted(core, call) or await _broken(core, up, exc)
        if resp.status != 200 or not body.stream:
            tokens = _usage_tokens(data) if resp.status == 200 else None
            core.complete(req_id, time.monotonic(), ok=resp.status == 200, output_tokens=tokens)
            up.flights.pop(req_id, None)
            relaying = True  # completed above
            return Response(data, status_code=resp.status, headers=out_headers)
        relaying = True  # from here the relay generator owns the request's completion
        return StreamingResponse(_relay(core, up, req_id, call, first, rest, resp), status_code=resp.status,
                                 headers=out_headers)
    finally:
        gone.cancel()
        if not relaying:
            up.flights.pop(req_id, None)
            core.complete(req_id, time.monotonic(), ok=False)


def _aborted(core: AgentCore, call: Call) -> Response | None:
    """For a request cut before any byte went back: 503 unstarted (the scheduler may re-route it once)."""
    if call.reason is None:
        return None
    log.warning("abort: request cut at the engine before its reply: %s", call.reason)
    return _unstarted(core, call.reason)


async def _broken(core: AgentCore, up: Upstream, exc: UpstreamError) -> Response:
    """The engine connection broke before any byte of the reply. If the engine now refuses connections its
    process is gone, so the request cannot finish there: 503 unstarted. Otherwise it may still be running
    (or have run): 502, never replayed."""
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(up.pool.host, up.pool.port)
    except (OSError, TimeoutError) as probe:
        if isinstance(probe, ConnectionRefusedError):
            if up.health.failed("engine refused connections", time.monotonic()):
                log.warning("engine unhealthy: it refuses connections")
            return _unstarted(core, f"engine died ({exc.message})")
    else:
        writer.close()
    return _engine_down(core, exc.message, 502)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _relay(core: AgentCore, up: Upstream, req_id: str, call: Call, first: bytes,
                 rest: AsyncIterator[bytes], resp: Stream) -> AsyncIterator[bytes]:
    counter = SseTokenCounter()
    framer = EventFramer()  # whole events only, so an error event after a break starts on a boundary
    ok = False
    try:
        chunk = first
        while chunk:
            n = counter.feed(chunk)
            if n:
                core.token(req_id, time.monotonic(), n)
            out = framer.feed(chunk)
            if out:
                yield out
            chunk = await anext(rest, b"")
        if framer.held:
            yield framer.flush()
        ok = counter.error is None
    except UpstreamError as exc:
        why = call.reason or f"engine stream broke: {exc.message}"
        log.warning("abort: stream cut: %s", why)
        yield error_event(why, type="bad_gateway", code="engine_error")
    finally:
        # A client may close as soon as it reads [DONE] (blockctl's load generator does), before upstream EOF:
        # the stream was complete all the same.
        ok = ok or (counter.done and counter.error is None)
        up.flights.pop(req_id, None)
        core.complete(req_id, time.monotonic(), ok=ok, output_tokens=counter.usage_completion_tokens)
        await resp.aclose()  # no I/O; a caller that left mid-stream: the engine sees the close and aborts


def _usage_tokens(data: bytes) -> int | None:
    try:
        usage = json.loads(data).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None
