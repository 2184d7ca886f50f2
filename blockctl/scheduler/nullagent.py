"""A null agent for measuring the scheduler alone: the agent API answered instantly with fixed bytes.

``python -m blockctl.scheduler.nullagent --port P [--port Q ...]`` serves the same raw ASGI app on every
port. It does no work per request, so whatever a benchmark measures through it is the scheduler's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn

_LOAD = {"instance": "null", "running": 0, "waiting": 0, "outstanding": 0, "kv_free_blocks": 1000,
         "kv_total_blocks": 1000, "waiting_prompt_blocks": 0, "recent_requests": 0}
_PREDICT = json.dumps({**_LOAD, "ttft_s": 0.01, "e2e_s": 0.1, "queue_s": 0.0}).encode()
COMPLETION = json.dumps({
    "id": "cmpl-null", "object": "text_completion", "created": 0, "model": "emulated",
    "choices": [{"index": 0, "text": " ok", "finish_reason": "length", "logprobs": None}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
}).encode()
_BODIES = {
    ("POST", "/predict"): _PREDICT,
    ("GET", "/load"): json.dumps(_LOAD).encode(),
    ("POST", "/v1/completions"): COMPLETION,
    ("GET", "/health"): b'{"status": "ok"}',
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI (no framework): drain the body, answer the canned bytes for the route, or 404."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = _BODIES.get((scope["method"], scope["path"]))
    status = 200 if body is not None else 404
    body = body if body is not None else b"{}"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _serve(ports: list[int], host: str) -> None:
    servers = [uvicorn.Server(uvicorn.Config(app, host=host, port=p, log_level="warning", access_log=False,
                                             loop="uvloop", http="httptools", lifespan="off"))
               for p in ports]
    await asyncio.gather(*(s.serve() for s in servers))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m blockctl.scheduler.nullagent", description=__doc__)
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    import uvloop

    uvloop.run(_serve(args.port, args.host))


if __name__ == "__main__":
    main()
