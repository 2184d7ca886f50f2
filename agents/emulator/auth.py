"""vLLM's ``--api-key`` (or ``VLLM_API_KEY``) for the emulator: ``/v1`` routes need the key as a Bearer token."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from blockctl.openai_api import bearer_matches, error_response


class RequireKey:
    """vLLM's ``--api-key``: every ``/v1`` route needs ``Authorization: Bearer <key>`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.keys = app, (key.encode(),)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not bearer_matches(auth, self.keys):
                denied = error_response(401, "invalid or missing API key", type="authentication_error",
                                        code="invalid_api_key")
                await denied(scope, receive, send)
                return
        await self.app(scope, receive, send)
