"""Forward a request to the chosen agent and relay the reply: at most once, never without a deadline.

A request goes to another instance only when it provably did not run where it was sent: the agent's
connection was refused (nothing was written), or the agent answered 503 with ``x-blockctl-unstarted`` (it
never reached the engine, or the agent aborted it there before any byte came back; re-routed once). Any
other failure after the request was written is that client's error, never a silent replay. Every retry and
every abort is logged with its reason (never with the prompt).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from starlette.responses import Response, StreamingResponse

from blockctl.errors import UpstreamError
from blockctl.openai_api import error_response
from blockctl.scheduler.agents import AgentClient
from blockctl.scheduler.call import UNSTARTED_HEADER, Call, Flight
from blockctl.scheduler.http1 import Stream
from blockctl.scheduler.metrics import SchedulerMetrics
from blockctl.scheduler.policies import InstanceView
from blockctl.scheduler.reqlog import Done, Outcome, StreamTokens, completion_tokens
from blockctl.scheduler.routing import Candidates, Router, predicted_e2e_ms

log = logging.getLogger("blockctl.scheduler")


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long a forwarded request may wait; the first byte's deadline follows the instance's prediction."""

    first_byte_floor_s: float = 10.0
    first_byte_factor: float = 4.0  # × predicted TTFT (streamed) or E2E (not streamed)
    idle_s: float = 30.0  # longest gap between streamed chunks
    seconds_per_token: float = 0.2  # not streamed and no prediction: floor + this × predicted output tokens

    def first_byte_s(self, view: InstanceView, stream: bool, output_tokens: int) -> float:
        p = view.prediction
        if p is not None:
            return max(self.first_byte_floor_s, self.first_byte_factor * (p.ttft_s if stream else p.e2e_s))
        return self.first_byte_floor_s + (0.0 if stream else self.seconds_per_token * output_tokens)


def sse_error(message: str) -> bytes:
    err = {"error": {"message": message, "type": "upstream_error", "param": None, "code": None}}
    return f"data: {json.dumps(err)}\n\n".encode()


async def _relay(first: bytes, rest: AsyncIterator[bytes], resp: Stream, instance: str, flight: Flight,
                 done: Done | None = None) -> AsyncIterator[bytes]:
    """The reply's bytes as they come; a broken, stalled or aborted upstream ends the stream with an SSE
    error event. With ``done``, the generated-text events are counted on the way and ``done`` is called
    once at the end."""
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
        log.warning("abort: stream from instance %s cut: %s", instance, exc.message)
        if resp.head.headers.get("content-type", "").startswith("text/event-stream"):
            yield sse_error(f"instance {instance} failed while streaming: {flight.reason or exc.message}")
    finally:
        await resp.aclose()  # no I/O: safe even when a client disconnect cancels the relay
        flight.finish()
        if outcome == "client_aborted":
            log.info("abort: client went away mid-stream; request cut at instance %s", instance)
        if done is not None and count is not None:
            done(Outcome(instance, resp.status, count.tokens, outcome))


def _failed(instance: str, exc: UpstreamError, flight: Flight, call: Call) -> Response:
    """A request that may have reached ``instance`` failed: the client's error (504 for a deadline)."""
    why = flight.reason or exc.message
    log.warning("abort: request to instance %s failed after it was sent, not retried: %s", instance, why)
    status = 504 if call.reason is not None and flight.reason is None else 502
    return error_response(status, f"instance {instance} failed: {why}", type="upstream_error")


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
    deadlines: Deadlines,
    flight: Flight,
    done: Done | None = None,
) -> Response:
    """Send ``body`` to the instance the router picks; pick again only when it provably did not run there.

    ``headers`` go to the agent as given, plus ``x-blockctl-predicted-e2e-ms`` and ``-ttft-ms`` of the chosen
    instance. The client gets ``x-blockctl-instance``, ``x-blockctl-predicted-e2e-ms`` (when predicted) and
    ``x-blockctl-predicted-output-tokens``. ``flight.abort`` (client gone, drain) cuts the request wherever it
    is. ``done`` is called once per request an instance answered, when its reply has been relayed.
    """
    last_error = "no instance could be tried"
    rerouted = False
    output_tokens = int(headers["x-blockctl-predicted-output-tokens"])
    owned = True  # until a streamed relay takes the flight over
    try:
        for attempt in range(max_retries + 1):
            if flight.reason is not None:
                break
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
                   "x-blockctl-predicted-output-tokens": headers["x-blockctl-predicted-output-tokens"]}
            send = dict(headers)
            if e2e is not None and view.prediction is not None:
                out["x-blockctl-predicted-e2e-ms"] = send["x-blockctl-predicted-e2e-ms"] = e2e
                send["x-blockctl-predicted-ttft-ms"] = f"{view.prediction.ttft_s * 1000:.1f}"
            call = flight.call = Call(first_byte_s=deadlines.first_byte_s(view, stream, output_tokens),
                                      idle_s=deadlines.idle_s)
            try:
                resp = await client.http.stream("POST", path, body, send, call)
            except UpstreamError as exc:
                metrics.forward_errors[view.instance] += 1
                if exc.sent:
                    if call.reason is not None and flight.reason is None:  # a deadline: the agent stalls
                        router.bench(view.instance, f"forward stalled ({call.reason})", client)
                    return _failed(view.instance, exc, flight, call)
                last_error = f"instance {view.instance}: {exc.message}"
                router.bench(view.instance, f"agent unreachable ({exc.message})", client)
                log.warning("retry: instance %s never got the request (%s)", view.instance, exc.message)
                continue
            unstarted = resp.head.headers.get(UNSTARTED_HEADER) if resp.status == 503 else None
            if unstarted is not None and not rerouted and attempt < max_retries:
                await resp.aclose()
                rerouted = True
                metrics.forward_errors[view.instance] += 1
                last_error = f"instance {view.instance}: {unstarted}"
                router.bench(view.instance, unstarted, client)
                log.warning("retry: instance %s did not run the request (%s); re-routing it once",
                            view.instance, unstarted)
                continue
            try:
                if stream:
                    rest = resp.chunks()
                    first = await anext(rest, b"")
                else:
                    content = await resp.read()
            except UpstreamError as exc:
                if call.reason is not None and flight.reason is None:
                    router.bench(view.instance, f"forward stalled ({call.reason})", client)
                return _failed(view.instance, exc, flight, call)
            metrics.routed[view.instance] += 1
            ctype = resp.head.headers.get("content-type", "application/json")
            if not stream:
                if done is not None:
                    done(Outcome(view.instance, resp.status, completion_tokens(content) or 0, "completed"))
                return Response(content, status_code=resp.status, headers=out, media_type=ctype)
            out["cache-control"] = "no-cache"
            owned = False
            return StreamingResponse(_relay(first, rest, resp, view.instance, flight, done),
                                     status_code=resp.status, headers=out, media_type=ctype)
    finally:
        if owned:
            flight.finish()
    if flight.reason is not None:
        log.info("abort: %s before any reply", flight.reason)
        return error_response(503, f"request aborted: {flight.reason}", type="service_unavailable")
    metrics.requests["upstream_failed"] += 1
    return error_response(502, f"every instance tried failed ({last_error}); check the cluster with "
                          "`blockctl status`", type="upstream_error")
