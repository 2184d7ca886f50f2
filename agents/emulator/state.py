"""The emulator's shared state: settings, engine config, tokenizer, runner, readiness and shutdown."""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from blockctl import replytable
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig
from blockctl.openai_api import error_response
from blockctl.tokens import TokenCounter
from blockctl_agents.emulator.config import EmulatorSettings
from blockctl_agents.emulator.runner import EngineRunner


class Emulator:
    """One emulated instance; ``start``/``stop`` run inside the server's event loop (lifespan)."""

    def __init__(
        self, settings: EmulatorSettings, config: EngineConfig, model: StepTimeModel, noise: float,
        counter: TokenCounter,
    ) -> None:
        self.settings = settings
        self.config = config
        self.model_name = settings.served_model_name[0]
        self.counter = counter
        self.noise = noise
        self.runner = EngineRunner(config, model, noise=noise, seed=settings.seed)
        self.reply_lengths = replytable.load(settings.reply_lengths) if settings.reply_lengths else {}
        self.reply_table_hits = 0  # requests whose length came from the table
        self.stopping = False
        self._ready_at = float("inf")

    def reply_tokens(self, body: object) -> int | None:
        """The workload's reply length for this request's prompt, when the reply-length table has it."""
        if not self.reply_lengths:
            return None
        text = replytable.client_prompt(body)
        found = None if text is None else self.reply_lengths.get(replytable.prompt_key(text))
        self.reply_table_hits += found is not None
        return found

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready_at = loop.time() + self.settings.startup_delay
        self.runner.start()

    def begin_shutdown(self) -> None:
        """Refuse new requests and end every request in flight (streams end with finish_reason "abort")."""
        self.stopping = True
        self.runner.abort_all()

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.runner.stop()

    def ready(self) -> bool:
        return (not self.stopping and self.runner.failure is None
                and asyncio.get_running_loop().time() >= self._ready_at)

    def refusal(self) -> Response | None:
        """A 503 while starting up or shutting down, else None."""
        if self.stopping:
            return error_response(503, "the server is shutting down", type="server_error")
        if self.runner.failure is not None:
            return error_response(500, f"the engine loop failed: {self.runner.failure!r}", type="server_error")
        if not self.ready():
            return error_response(503, "the engine is starting up", type="server_error",
                                  headers={"retry-after": "1"})
        return None
