"""The predicted output length of a request: client hint, then the tagger, then a documented fallback.

Order (first that applies wins):

1. header ``x-blockctl-output-tokens``: the client knows best (benchmarks pass the true length for oracle);
2. a chat's earlier replies, when the daemon's tagger has a reply-history table (``blockctl.predict.history``):
   the mean of the next reply's length given how long the conversation's replies have been;
3. the length tagger, when the daemon has one (``--tagger DIR``);
4. fallback: ``min(limit, default_output_tokens)``, where ``limit`` is the body's max_tokens (or
   max_completion_tokens) and ``default_output_tokens`` defaults to 256 (a ShareGPT-like reply; its median
   reply is a little over 200 tokens with cl100k).

Every answer is clamped to ``[1, limit]`` when the body sets a limit, and equals the limit when the body sets
``ignore_eos`` (the engine then generates exactly that many tokens).
"""

from __future__ import annotations

from typing import Literal, Protocol

from blockctl.errors import BadRequest, ConfigError

DEFAULT_OUTPUT_TOKENS = 256
HINT_HEADER = "x-blockctl-output-tokens"

Source = Literal["header", "history", "tagger", "ignore_eos", "fallback"]


class LengthPredictor(Protocol):
    """What the scheduler needs from a length tagger (``blockctl.tagger.online.OnlineTagger``).

    ``predict`` returns None when it has no answer in time (the fallback length is used). Optional async
    ``start()`` / ``close()`` methods are called at daemon start-up and shutdown when the object has them. An
    optional async ``predict_length(text)`` returning ``(tokens, atoms or None)`` gives the calibrated
    distribution of the length too (the scheduler then sends those atoms, not a prior around ``tokens``). An
    optional ``history`` attribute (a ``blockctl.predict.history.ReplyHistory``) answers for chats with earlier
    replies.
    """

    async def predict(self, prompt_text: str) -> int | None: ...


def parse_hint(value: str | None) -> int | None:
    """The client's length hint, or None when absent; BadRequest when it is not a positive integer."""
    if value is None:
        return None
    try:
        hint = int(value)
    except ValueError:
        raise BadRequest(f"header {HINT_HEADER} must be a positive integer", param=HINT_HEADER) from None
    if hint < 1:
        raise BadRequest(f"header {HINT_HEADER} must be a positive integer", param=HINT_HEADER)
    return hint


def resolve(
    *, hint: int | None, tagged: int | None, limit: int | None, ignore_eos: bool, default: int,
    history: int | None = None,
) -> tuple[int, Source]:
    """The predicted output length and where it came from (see the module docstring)."""
    if ignore_eos and limit is not None:
        return limit, "ignore_eos"
    source: Source
    if hint is not None:
        value, source = hint, "header"
    elif history is not None and history > 0:
        value, source = history, "history"
    elif tagged is not None and tagged > 0:
        value, source = tagged, "tagger"
    else:
        value, source = default, "fallback"
    if limit is not None:
        value = min(value, limit)
    return max(1, value), source


def load_tagger(path: str) -> LengthPredictor:
    """The online tagger saved in ``path``; ConfigError when it cannot be loaded."""
    try:
        from blockctl.tagger.online import OnlineTagger
    except ImportError as exc:
        raise ConfigError(f"the length tagger is not available: {exc}", key="tagger",
                          hint="pip install 'blockctl[tagger]'") from None
    tagger: LengthPredictor = OnlineTagger(path)
    return tagger
