"""Factories for predictor tests: agent settings and apps, and a synthetic in-flight table."""

from __future__ import annotations

from blockctl.engine.profile import DEFAULT_PROFILE, load_profile
from blockctl.predict.tracker import Tracked
from blockctl_agents.predictor.core import AgentCore
from blockctl_agents.predictor.settings import AgentSettings

TOKEN = "test-token-123"
PROFILE = load_profile(DEFAULT_PROFILE)


def settings(engine_url: str, *, token: str | None = TOKEN, scrape_interval_s: float = 0.5,
             learn: bool = True) -> AgentSettings:
    return AgentSettings(
        engine_url,
        "inst-0",
        PROFILE.name,
        PROFILE.engine_defaults(),
        token=token,
        scrape_interval_s=scrape_interval_s,
        connect_retries=1,
        learn=learn,
    )


def core_with(running: int, waiting: int, *, now: float = 100.0) -> AgentCore:
    """An agent core holding ``running`` half-done streaming requests and ``waiting`` unstarted ones."""
    core = AgentCore(settings("http://127.0.0.1:1"), PROFILE.model)
    for i in range(running + waiting):
        t = Tracked(f"r{i}", now - 10 + i * 0.01, 300, 200, stream=True)
        if i < running:
            t.produced, t.first_token_at, t.last_token_at = 100, now - 5, now - 0.01
        core.tracker.add(t)
    return core
