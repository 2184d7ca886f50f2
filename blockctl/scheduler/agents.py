"""The scheduler's side of the agent API: one keep-alive HTTP client per agent; agent JSON → InstanceView."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from blockctl.engine.types import Prediction
from blockctl.errors import InstanceUnavailable, UpstreamError
from blockctl.scheduler.http1 import Http1Pool
from blockctl.scheduler.policies import InstanceView

_JSON = {"content-type": "application/json"}


_LOAD_KEYS = ("running", "waiting", "outstanding", "kv_free_blocks", "kv_total_blocks", "waiting_prompt_blocks",
              "recent_requests")
_PREDICTION_KEYS = ("ttft_s", "e2e_s", "queue_s")


def view_from_json(instance: str, data: Any, *, with_prediction: bool) -> InstanceView:
    """An agent's ``/predict`` (``with_prediction``) or ``/load`` answer as a view (ValueError: malformed)."""
    # On the hot path (once per agent per request): plain type checks, no validation framework.
    if not isinstance(data, dict):
        raise ValueError("malformed agent answer: not a JSON object")
    try:
        load = [data[k] for k in _LOAD_KEYS]
        if any(type(v) is not int for v in load):
            raise ValueError("malformed agent answer: a load field is not an integer")
        prediction = None
        if with_prediction:
            times = [data[k] for k in _PREDICTION_KEYS]
            if any(type(v) not in (float, int) for v in times):
                raise ValueError("malformed agent answer: a prediction field is not a number")
            prefill = data.get("prefill_s", 0.0)
            if type(prefill) not in (float, int):
                raise ValueError("malformed agent answer: prefill_s is not a number")
            prediction = Prediction(float(times[0]), float(times[1]), float(times[2]), load[0], load[1], load[3],
                                    float(prefill))
    except KeyError as exc:
        raise ValueError(f"malformed agent answer: missing {exc}") from None
    hit, bs = data.get("prefix_hit_tokens", 0), data.get("block_size", 16)
    if type(hit) is not int or type(bs) is not int or bs < 1:
        raise ValueError("malformed agent answer: prefix_hit_tokens or block_size is not an integer")
    running, waiting, outstanding, free, total, waiting_blocks, recent = load
    return InstanceView(instance, prediction, running, waiting, outstanding, free, total, waiting_blocks, recent,
                        hit, bs)


def _reason(content: bytes) -> str:
    """The message of an OpenAI-style error body (the agent says why its instance is unavailable)."""
    try:
        message = json.loads(content)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return "HTTP 503"
    return str(message)[:200]


class AgentClient:
    """All calls to one agent: load/prediction queries and the forwarded OpenAI traffic share one pool."""

    def __init__(self, name: str, agent_url: str, token: str | None) -> None:
        self.name = name
        self.url = agent_url.rstrip("/")
        self.http = Http1Pool(self.url, {"authorization": f"Bearer {token}"} if token else None)

    async def view(
        self, prompt_tokens: int, output_tokens: int, *, predict: bool, timeout: float | None = None,
        prefix: bytes = b"",
    ) -> InstanceView:
        """Ask ``/predict`` (or ``/load``); UpstreamError on failure, ValueError if malformed.

        ``timeout`` None: the caller bounds the call (the router cancels it at its deadline; one task less).
        """
        if predict:
            body = b'{"prompt_tokens": %d, "predicted_output_tokens": %d%s}' % (
                prompt_tokens, output_tokens, b', "block_hashes": ' + prefix if prefix else b"")
            call = self.http.request("POST", "/predict", body, _JSON)
        elif prefix:  # prefix-aware load policies: the agent also says how much of the prompt it holds
            body = b'{"prompt_tokens": %d, "block_hashes": %s}' % (prompt_tokens, prefix)
            call = self.http.request("POST", "/load", body, _JSON)
        else:
            call = self.http.request("GET", "/load")
        try:
            async with asyncio.timeout(timeout):
                status, _, content = await call
        except TimeoutError:
            raise UpstreamError(f"no answer within {(timeout or 0) * 1000:.0f} ms", url=self.url) from None
        if status == 503:
            raise InstanceUnavailable(f"unavailable: {_reason(content)}", url=self.url)
        if status != 200:
            raise UpstreamError(f"HTTP {status}", url=self.url)
        return view_from_json(self.name, json.loads(content), with_prediction=predict)

    async def aclose(self) -> None:
        await self.http.aclose()
