"""A stand-in predictor agent for scheduler tests: the agent API on loopback, with scripted behaviour."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from blockctl.cluster.state import ClusterState, InstanceState, save_state


@dataclass
class FakeAgent:
    """Answers /predict with ``e2e_s`` (or hangs / fails), completions with ``words`` (streamed or not)."""

    name: str
    e2e_s: float = 1.0
    ttft_s: float = 0.1
    outstanding: int = 0
    predict_delay_s: float = 0.0  # > deadline: the agent "hangs"
    predict_status: int = 200
    traffic_status: int = 200
    break_stream_after: int | None = None  # chunks sent before the stream is cut off
    words: tuple[str, ...] = ("hello", " from", " the", " agent")
    token: str | None = None
    hang_s: float = 0.0  # completions wait this long before answering (a stuck instance)
    stall_after: int | None = None  # streamed chunks sent before the stream stalls for hang_s
    word_delay_s: float = 0.0  # between streamed chunks
    disconnects: int = 0  # completions whose caller went away while they waited
    predicts: list[dict[str, Any]] = field(default_factory=list)
    forwarded: list[dict[str, str]] = field(default_factory=list)  # headers of forwarded traffic
    loads: int = 0
    prefix_hit_tokens: int = 0  # answered to a POST /load (prefix-aware load policies)
    load_bodies: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/predict", self._predict, methods=["POST"]),
            Route("/load", self._load, methods=["GET", "POST"]),
            Route("/v1/completions", self._complete, methods=["POST"]),
            Route("/v1/chat/completions", self._complete, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    def _authorized(self, request: Request) -> bool:
        return self.token is None or request.headers.get("authorization") == f"Bearer {self.token}"

    def _load_json(self) -> dict[str, Any]:
        return {"instance": self.name, "running": 1, "waiting": 0, "outstanding": self.outstanding,
                "kv_free_blocks": 100, "kv_total_blocks": 200, "waiting_prompt_blocks": 0,
                "recent_requests": 3}

    async def _predict(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        self.predicts.append(await request.json())
        if self.predict_delay_s:
            await asyncio.sleep(self.predict_delay_s)
        if self.predict_status == 503:  # as a real agent whose engine is sick
            err = {"message": "engine unhealthy: scripted", "type": "x", "param": None, "code": "engine_unhealthy"}
            return JSONResponse({"error": err}, status_code=503)
        if self.predict_status != 200:
            return JSONResponse({"error": "boom"}, status_code=self.predict_status)
        return JSONResponse({**self._load_json(), "ttft_s": self.ttft_s, "e2e_s": self.e2e_s, "queue_s": 0.0})

    async def _load(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        self.loads += 1
        if 503 in (self.traffic_status, self.predict_status):  # a real agent whose engine is down: probes fail
            err = {"message": "engine unreachable", "type": "x", "param": None, "code": "engine_unhealthy"}
            return JSONResponse({"error": err}, status_code=503)
        if request.method == "POST":
            self.load_bodies.append(await request.json())
            return JSONResponse({**self._load_json(), "prefix_hit_tokens": self.prefix_hit_tokens,
                                 "block_size": 16})
        return JSONResponse(self._load_json())

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "emulated", "object": "model", "created": 0,
                                                         "owned_by": "blockctl", "max_model_len": 4096}]})

    async def _complete(self, request: Request) -> Response:
        self.forwarded.append(dict(request.headers))
        if self.traffic_status != 200:
            err = {"message": "engine down", "type": "x", "param": None, "code": None}
            # A 503 from a real agent means the engine never ran the request (x-blockctl-unstarted says why).
            unstarted = {"x-blockctl-unstarted": "engine unreachable"} if self.traffic_status == 503 else None
            return JSONResponse({"error": err}, status_code=self.traffic_status, headers=unstarted)
        body = await request.json()
        chat = request.url.path.endswith("chat/completions")
        if self.hang_s and not body.get("stream"):
            deadline = time.monotonic() + self.hang_s
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    self.disconnects += 1
                    return Response(status_code=499)
                await asyncio.sleep(0.02)
        if body.get("stream"):
            return StreamingResponse(self._sse(chat), media_type="text/event-stream")
        text = "".join(self.words)
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text},
                                   "finish_reason": "stop"} if chat else
                                  {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None})
        n = len(self.words)
        return JSONResponse({
            "id": "x-1", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": "emulated", "choices": [choice],
            "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n},
        })

    async def _sse(self, chat: bool) -> AsyncIterator[bytes]:
        for n, word in enumerate(self.words):
            if self.break_stream_after is not None and n >= self.break_stream_after:
                raise RuntimeError("engine died mid-stream")
            delta: dict[str, Any] = ({"index": 0, "delta": {"content": word}, "finish_reason": None} if chat
                                     else {"index": 0, "text": word, "finish_reason": None, "logprobs": None})
            chunk = {"id": "x-1", "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": 0, "model": "emulated", "choices": [delta]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(self.word_delay_s)
            if self.stall_after is not None and n + 1 >= self.stall_after:
                await asyncio.sleep(self.hang_s)
        yield b"data: [DONE]\n\n"


def write_cluster(state_dir: Path, agents: dict[str, str], *, draining: tuple[str, ...] = (),
                  policy: str = "block") -> None:
    """cluster.json naming ``agents`` (name -> agent URL)."""
    instances = tuple(
        InstanceState(name=n, host="127.0.0.1", agent_url=url, engine_url=url, profile="h100/llama-2-7b",
                      status="draining" if n in draining else "serving")
        for n, url in agents.items()
    )
    save_state(state_dir, ClusterState(kind="local", policy=policy, instances=instances))
