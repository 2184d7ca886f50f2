"""The request shapes a workload yields, and a loaded workload with what was skipped while reading it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One request of a workload.

    NOTE: ``output_tokens`` is the reference (true) output length: the load generator forces it with
    ``max_tokens`` + ``ignore_eos``; the simulator runs the engine model to it.
    """

    prompt: str | None  # text when the source has it (None for length-only traces)
    prompt_tokens: int
    output_tokens: int  # reference (true) output length
    timestamp: float | None = None  # seconds from trace start (trace replay)
    # The prompt's token ids under the workload tokenizer, and when known the reply's after them (multi-turn
    # replays): what an engine's prefix cache hashes. None for workloads whose prompts share nothing.
    token_ids: Sequence[int] | None = None
    # Multi-turn replays: the lengths of the conversation's earlier replies, which a chat request carries as
    # its assistant messages (a router's length evidence, blockctl.predict.history). () for first turns.
    replies: tuple[int, ...] = ()
    # Multi-turn replays: the conversation as chat messages, (role, text), ending with this turn's user text;
    # what a live run with --api chat sends (the earlier replies as assistant messages). () for others.
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Workload:
    """A loaded workload: the items, where they came from, and notes such as rows skipped."""

    name: str  # the spec it was loaded from (registry name or file path)
    items: list[WorkItem]
    notes: list[str] = field(default_factory=list)  # e.g. "skipped 12 failed requests (zero response tokens)"
