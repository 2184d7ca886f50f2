"""The scheduler's side of the agent API: one keep-alive HTTP client per agent; agent JSON → InstanceView."""

from __future__ import annotations

from typing import Any

import httpx

from blockctl.engine.types import Prediction
from blockctl.errors import UpstreamError
from blockctl.scheduler.policies import InstanceView

# The engine may take minutes to finish a reply: no read timeout on traffic; /predict has its own deadline.
TRAFFIC_TIMEOUT = httpx.Timeout(connect=2.0, read=None, write=30.0, pool=5.0)
# Streams hold their connection for the whole reply, so the pool is unbounded: a /predict must never wait
# behind long streams; idle connections are kept for reuse (keep-alive is most of the hot path's speed).
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=512, keepalive_expiry=60.0)


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} is not an integer")
    return value


def _float(data: dict[str, Any], key: str) -> float:
    value = data[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{key} is not a number")
    return float(value)


def view_from_json(instance: str, data: Any, *, with_prediction: bool) -> InstanceView:
    """An agent's ``/predict`` (``with_prediction``) or ``/load`` answer as a view (ValueError: malformed)."""
    try:
        if not isinstance(data, dict):
            raise TypeError("answer is not a JSON object")
        prediction = None
        if with_prediction:
            prediction = Prediction(
                ttft_s=_float(data, "ttft_s"), e2e_s=_float(data, "e2e_s"), queue_s=_float(data, "queue_s"),
                running=_int(data, "running"), waiting=_int(data, "waiting"),
                kv_free_blocks=_int(data, "kv_free_blocks"),
            )
        return InstanceView(
            instance=instance, prediction=prediction, running=_int(data, "running"),
            waiting=_int(data, "waiting"), outstanding=_int(data, "outstanding"),
            kv_free_blocks=_int(data, "kv_free_blocks"), kv_total_blocks=_int(data, "kv_total_blocks"),
            waiting_prompt_blocks=_int(data, "waiting_prompt_blocks"),
            recent_requests=_int(data, "recent_requests"),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed agent answer: {exc}") from None


class AgentClient:
    """All calls to one agent: load/prediction queries and the forwarded OpenAI traffic share one pool."""

    def __init__(self, name: str, agent_url: str, token: str | None, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.url = agent_url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=TRAFFIC_TIMEOUT,
                                      limits=LIMITS, transport=transport)

    async def view(
        self, prompt_tokens: int, output_tokens: int, *, predict: bool, timeout: float
    ) -> InstanceView:
        """Ask ``/predict`` (or ``/load``); UpstreamError on any failure, ValueError on a malformed answer."""
        try:
            if predict:
                body = {"prompt_tokens": prompt_tokens, "predicted_output_tokens": output_tokens}
                resp = await self.http.post("/predict", json=body, timeout=timeout)
            else:
                resp = await self.http.get("/load", timeout=timeout)
        except httpx.HTTPError as exc:
            raise UpstreamError(type(exc).__name__, url=self.url) from None
        if resp.status_code != 200:
            raise UpstreamError(f"HTTP {resp.status_code}", url=self.url)
        return view_from_json(self.name, resp.json(), with_prediction=predict)

    async def aclose(self) -> None:
        await self.http.aclose()
