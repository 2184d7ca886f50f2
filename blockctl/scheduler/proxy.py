"""Forward a request to the chosen agent and relay the reply; retry elsewhere while nothing was sent back."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response, StreamingResponse

from blockctl.errors import UpstreamError
from blockctl.openai_api import error_response
from blockctl.scheduler.agents import AgentClient
from blockctl.scheduler.http1 import Stream
from blockctl.scheduler.metrics import SchedulerMetrics
from blockctl.scheduler.reqlog import Done, Outcome, StreamTokens, completion_tokens
from blockctl.scheduler.routing import Candidates, Router, predicted_e2e_ms

log = logging.getLogger("blockctl.scheduler")

# The agent answers these when its engine is gone or overloaded: the request never started, try elsewhere.
RETRY_STATUSES = frozenset({502, 503, 504})


def _sse_error(message: str) -> bytes:
    err = {"error": {"message": message, "type": "upstream_error", "param": None, "code": None}}
    return f"data: {json.dumps(err)}\n\n".encode()


async def _relay(first: bytes, rest: AsyncIterator[bytes], resp: Stream, instance: str,
                 done: Done | None = None) -> AsyncIterator[bytes]:
    """The reply's bytes as they come; a broken upstream ends the stream with an SSE error event.

    With ``done``, the generated-text events are counted on the way and ``done`` is called once at the end.
    """
    count = StreamTokens() if done is not None else None
    outcome = "client_aborted"  # unless the loop below ends on its own
    try:
        if first:
            if count is not None:
                count.feed(first)
            yield first
        async for chunk in rest:
            if count is not None:
                count.feed(chunk)
            yield chunk
        outcome = "completed"
    except UpstreamError as exc:
        outcome = "upstream_broken"
        log.warning("instance %s broke off a streamed reply: %s", instance, exc.message)
        if resp.head.headers.get("content-type", "").startswith("text/event-stream"):
            yield _sse_error(f"instance {instance} failed while streaming")
    finally:
        await resp.aclose()  # no I/O: safe even when a client disconnect cancels the relay
        if done is not None and count is not None:
            done(Outcome(instance, resp.status, count.tokens, outcome))


async def forward(
    router: Router,
    c: Candidates,
    clients: Mapping[str, AgentClient],
    *,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    stream: bool,
    max_retries: int,
    metrics: SchedulerMetrics,
    done: Done | None = None,
) -> Response:
    """Send ``body`` to the instance the router picks; on a failure before the first reply byte, pick again.

    ``headers`` go to the agent as given, plus ``x-blockctl-predicted-e2e-ms`` of the chosen instance. The
    client gets ``x-blockctl-instance``, ``x-blockctl-predicted-e2e-ms`` (when predicted) and
    ``x-blockctl-predicted-output-tokens`` with ``x-blockctl-length-source``. Non-streamed replies are read in
    full before anything is sent, so any failure can be retried; streamed ones are committed at their first
    byte. ``done`` is called
    once per request an instance answered, when its reply has been relayed (see ``reqlog``).
    """
    last_error = "no instance could be tried"
    for attempt in range(max_retries + 1):
        view = router.choose(c)
        if view is None:
            break
        client = clients.get(view.instance)
        if client is None:
            continue
        if attempt:
            metrics.retries += 1
        e2e = predicted_e2e_ms(view)
        out = {"x-blockctl-instance": view.instance,
               "x-blockctl-predicted-output-tokens": headers["x-blockctl-predicted-output-tokens"],
               "x-blockctl-length-source": headers.get("x-blockctl-length-source", "")}
        send = dict(headers)
        if e2e is not None:
            out["x-blockctl-predicted-e2e-ms"] = send["x-blockctl-predicted-e2e-ms"] = e2e
        try:
            resp = await client.http.stream("POST", path, body, send)
            if resp.status in RETRY_STATUSES and attempt < max_retries:
                await resp.aclose()
                raise _Retry(f"HTTP {resp.status}")
            if stream:
                rest = resp.chunks()
                first = await anext(rest, b"")
            else:
                content = await resp.read()
        except (UpstreamError, _Retry) as exc:
            last_error = f"instance {view.instance}: {exc.message if isinstance(exc, UpstreamError) else exc}"
            metrics.forward_errors[view.instance] += 1
            router.bench(view.instance)
            log.warning("forward to %s failed before the reply: %s", view.instance, last_error)
            continue
        metrics.routed[view.instance] += 1
        ctype = resp.head.headers.get("content-type", "application/json")
        if not stream:
            if done is not None:
                done(Outcome(view.instance, resp.status, completion_tokens(content) or 0, "completed"))
            return Response(content, status_code=resp.status, headers=out, media_type=ctype)
        out["cache-control"] = "no-cache"
        return StreamingResponse(_relay(first, rest, resp, view.instance, done), status_code=resp.status,
                                 headers=out, media_type=ctype)
    metrics.requests["upstream_failed"] += 1
    return error_response(502, f"every instance tried failed ({last_error}); check the cluster with "
                          "`blockctl status`", type="upstream_error")


class _Retry(Exception):
    """The agent answered a status that means the request never started."""
