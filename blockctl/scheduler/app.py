"""The scheduler daemon's HTTP front: OpenAI-compatible endpoints that route each request by policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from blockctl import __version__
from blockctl.errors import BadRequest, UpstreamError
from blockctl.fastroutes import FastStarlette
from blockctl.openai_api import (
    ENDPOINT_KIND,
    bad_request_response,
    bearer_matches,
    error_response,
    http_error_handlers,
    parse_completion_body,
    read_body,
)
from blockctl.predict.history import ReplyHistory
from blockctl.predict.lengths import QUANTILES_HEADER, dist, format_atoms, prior
from blockctl.scheduler import lengths
from blockctl.scheduler.call import Flight
from blockctl.scheduler.membership import Membership
from blockctl.scheduler.metrics import SchedulerMetrics
from blockctl.scheduler.parsed import parse_request
from blockctl.scheduler.policies import RouteRequest, make_policy
from blockctl.scheduler.proxy import Deadlines, forward
from blockctl.scheduler.reqlog import RequestLogger, RequestLogSettings
from blockctl.scheduler.routing import Router
from blockctl.tokenize_api import max_model_len, tokenize_response
from blockctl.tokens import get_counter

log = logging.getLogger("blockctl.scheduler")

NO_INSTANCE = "no instance is serving requests; check the cluster with `blockctl status`"


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    state_dir: Path
    policy: str = "block"
    k: int | None = None  # block-pok's k
    predict_timeout_s: float = 0.1  # deadline for all agents' /predict (or /load) answers together
    api_keys: frozenset[str] = field(default_factory=frozenset)  # empty: the public endpoint is open
    default_output_tokens: int = lengths.DEFAULT_OUTPUT_TOKENS
    max_retries: int = 2  # further instances tried when one fails before its first reply byte
    tokenizer_dir: str | None = None
    seed: int | None = None  # the policy's rng (ties, sampling, random); None: from the OS
    poll_s: float = 0.25  # how often cluster.json is checked for changes
    max_body_bytes: int = 32 * 1024 * 1024  # larger request bodies get 413 (they are held in memory)
    request_log: RequestLogSettings | None = None  # one JSON line per answered request (scheduler.reqlog)
    deadlines: Deadlines = field(default_factory=Deadlines)  # first byte and idle gap of forwarded requests
    body_timeout_s: float = 30.0  # a client that takes longer to upload its request body is cut off
    drain_s: float = 5.0  # after SIGTERM: how long requests in flight may still run


class Scheduler:
    """One daemon's routing state; ``app`` is the Starlette application serving it."""

    def __init__(self, settings: SchedulerSettings, *, tagger: lengths.LengthPredictor | None = None) -> None:
        self.settings = settings
        self.tagger = tagger
        # a conversation's earlier replies → its next reply's length, when the tagger carries the table
        self._history: ReplyHistory | None = getattr(tagger, "history", None)
        self.counter = get_counter(settings.tokenizer_dir)
        self.metrics = SchedulerMetrics(settings.policy)
        self.membership = Membership(settings.state_dir, poll_s=settings.poll_s)
        self.request_log = RequestLogger(settings.request_log) if settings.request_log else None
        self.router = Router(make_policy(settings.policy, k=settings.k), rng=random.Random(settings.seed),
                             deadline_s=settings.predict_timeout_s, metrics=self.metrics)
        self._keys = [k.encode() for k in settings.api_keys]
        self.flights: set[Flight] = set()  # requests in flight (a drain aborts what is left at its deadline)
        self.draining = False
        routes = [
            Route("/v1/completions", self.completion, methods=["POST"]),
            Route("/v1/chat/completions", self.completion, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]
        hot = {("POST", "/v1/completions"): self.completion, ("POST", "/v1/chat/completions"): self.completion}
        self.app = FastStarlette(routes=routes, fast=hot, lifespan=self._lifespan,
                                 exception_handlers={**http_error_handlers(crash=False), Exception: self._crash})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # A tagger may have a lifecycle (OnlineTagger: start() loads the model off the loop, close() stops it).
        start, close = getattr(self.tagger, "start", None), getattr(self.tagger, "close", None)
        if start is not None:
            await start()
        await self.membership.start()
        if self.request_log is not None:
            await self.request_log.start()
        try:
            yield
        finally:
            await self.router.aclose()
            await self.membership.stop()
            if self.request_log is not None:
                await self.request_log.close()
            if close is not None:
                await close()

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("internal error on %s: %s", request.url.path, type(exc).__name__, exc_info=exc)
        self.metrics.requests["internal_error"] += 1
        return error_response(500, f"internal scheduler error ({type(exc).__name__})", type="server_error")

    def _denied(self, request: Request) -> Response | None:
        if not self._keys:
            return None
        if bearer_matches(request.headers.get("authorization", ""), self._keys):
            return None
        self.metrics.requests["unauthorized"] += 1
        return error_response(401, "invalid or missing API key", code="invalid_api_key")

    def begin_drain(self) -> None:
        """SIGTERM: take no new requests; what is in flight may run ``drain_s`` more, then it is cut (streams
        end with an SSE error event)."""
        if self.draining:
            return
        self.draining = True
        log.warning("draining: %d request(s) in flight get %.1f s to finish", len(self.flights),
                    self.settings.drain_s)
        asyncio.get_running_loop().call_later(self.settings.drain_s, self._drain_expired)

    def _drain_expired(self) -> None:
        if self.flights:
            log.warning("drain deadline: aborting %d request(s) still in flight", len(self.flights))
        for flight in list(self.flights):
            flight.abort("the scheduler is shutting down")

    async def completion(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        if self.draining:
            return error_response(503, "the scheduler is shutting down; send the request to another one",
                                  type="service_unavailable")
        try:
            raw = await self._body(request)
        except TimeoutError:
            self.metrics.requests["bad_request"] += 1
            return error_response(408, f"request body not received within {self.settings.body_timeout_s:.0f} s")
        if raw is None:
            self.metrics.requests["too_large"] += 1
            return error_response(413, f"request body larger than {self.settings.max_body_bytes} bytes")
        try:
            body = parse_completion_body(raw, ENDPOINT_KIND[request.scope["path"]])
            hint = lengths.parse_hint(request.headers.get(lengths.HINT_HEADER))
            parsed = parse_request(body, self.counter, count_replies=self._history is not None)
            prompt_tokens = parsed.prompt_tokens
        except (BadRequest, ValueError) as exc:
            self.metrics.requests["bad_request"] += 1
            return bad_request_response(exc if isinstance(exc, BadRequest) else BadRequest(str(exc)))
        started = time.perf_counter()
        told = self._history.dist(parsed.replies) if hint is None and self._history is not None else None
        tagged_length = await self._tag(parsed.text) if (
            hint is None and told is None and self.tagger is not None) else None
        tagged, atoms = tagged_length if tagged_length is not None else (None, None)
        output_tokens, source = lengths.resolve(
            hint=hint, tagged=tagged, limit=body.output_limit(), ignore_eos=body.ignore_eos,
            default=self.settings.default_output_tokens, history=None if told is None else round(told.mean),
        )
        self.metrics.length_sources[source] += 1
        serving, clients = self.membership.serving, self.membership.clients
        if not serving:
            self.metrics.requests["no_instance"] += 1
            return error_response(503, NO_INSTANCE, type="service_unavailable")
        # a number that stands for a distribution (max_tokens still caps it where it runs)
        length = ((dist(atoms) if atoms else prior(tagged)) if source == "tagger" and tagged else
                  told if source == "history" else
                  prior(self.settings.default_output_tokens) if source == "fallback" else None)
        route = RouteRequest(prompt_tokens, output_tokens, true_output_tokens=hint, length=length,
                             prefix=parsed.hashes_json)
        candidates = await self.router.candidates(route, serving, clients)
        self.metrics.routing_seconds.observe(time.perf_counter() - started)
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            "x-blockctl-prompt-tokens": str(prompt_tokens),
            "x-blockctl-predicted-output-tokens": str(output_tokens),
            "x-blockctl-length-source": source,
        }
        if length is not None:  # one number stands for a distribution: let the agent know
            headers[QUANTILES_HEADER] = format_atoms(length)
        done = None if self.request_log is None else self.request_log.done(
            prompt=parsed.text, prompt_tokens=prompt_tokens, predicted=output_tokens, source=source,
            model=body.model or "")
        flight = Flight(self.flights)
        # Starlette cancels a streamed reply when its client leaves; a non-streamed one needs a watcher.
        gone = None if body.stream else asyncio.ensure_future(_disconnected(request))
        if gone is not None:
            gone.add_done_callback(lambda t: None if t.cancelled() else flight.abort("the client went away"))
        try:
            response = await forward(
                self.router, candidates, clients, path=request.scope["path"], body=raw, headers=headers,
                stream=body.stream, max_retries=self.settings.max_retries, metrics=self.metrics,
                deadlines=self.settings.deadlines, flight=flight, done=done,
            )
        finally:
            if gone is not None:
                gone.cancel()
        if response.status_code < 500:
            self.metrics.requests["forwarded"] += 1
        return response

    async def _body(self, request: Request) -> bytes | None:
        """The request body, or None when it exceeds ``max_body_bytes`` (checked before reading it all).

        TimeoutError when the client takes longer than ``body_timeout_s`` to upload it."""
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                return await read_body(request, self.settings.max_body_bytes)
        except BadRequest:
            return None

    async def _tag(self, text: str) -> tuple[int, tuple[int, ...] | None] | None:
        """The tagger's length and, when it has a calibration, the atoms of its distribution."""
        assert self.tagger is not None
        try:
            with_atoms = getattr(self.tagger, "predict_length", None)
            if with_atoms is not None:
                answer: tuple[int, tuple[int, ...] | None] | None = await with_atoms(text)
                return answer
            tokens = await self.tagger.predict(text)
            return None if tokens is None else (tokens, None)
        except Exception as exc:  # a broken tagger must not break routing: use the fallback length
            log.warning("length tagger failed (%s); using the fallback length", type(exc).__name__)
            return None

    async def models(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        content = await self._instance_models()
        if content is None:
            return error_response(503, NO_INSTANCE, type="service_unavailable")
        return Response(content, media_type="application/json")

    async def _instance_models(self) -> bytes | None:
        """The first serving instance's ``/v1/models`` body, or None when none answers."""
        clients = self.membership.clients
        for name in self.membership.serving:
            client = clients.get(name)
            if client is None:
                continue
            try:
                async with asyncio.timeout(5.0):
                    status, _, content = await client.http.request("GET", "/v1/models")
            except (UpstreamError, TimeoutError):
                continue
            if status == 200:
                return content
        return None

    async def tokenize(self, request: Request) -> Response:
        """vLLM's ``/tokenize`` with the scheduler's own tokenizer (the one it counts prompts with: ``--tokenizer``,
        else cl100k as the emulator); ``max_model_len`` from an instance's ``/v1/models`` when one answers."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        raw = await self._body(request)
        if raw is None:
            return error_response(413, f"request body larger than {self.settings.max_body_bytes} bytes")
        return tokenize_response(raw, self.counter, max_model_len(await self._instance_models()))

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": f"blockctl-scheduler {__version__}"})

    async def health(self, request: Request) -> Response:
        out = {name: {"reason": o.reason, "since_s": round(time.monotonic() - o.since, 3)}
               for name, o in self.router.quarantine.out.items()}
        return JSONResponse({"status": "draining" if self.draining else "ok", "policy": self.settings.policy,
                             "instances": len(self.membership.serving), "out_of_rotation": out})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(len(self.membership.serving)),
                                 media_type="text/plain; version=0.0.4")


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body was read already, so only that can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(settings: SchedulerSettings, *, tagger: lengths.LengthPredictor | None = None) -> Starlette:
    """The daemon's ASGI app (for uvicorn or in-process tests)."""
    return Scheduler(settings, tagger=tagger).app
