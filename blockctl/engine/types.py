"""Plain data shared by the engine model, the emulator, the predictor and the simulator."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine settings that shape scheduling; names and defaults follow vLLM's where they overlap."""

    block_size: int = 16  # tokens per KV block
    num_gpu_blocks: int = 4096  # KV blocks on the instance (vLLM: --num-gpu-blocks-override)
    max_num_seqs: int = 256  # most requests running at once
    max_num_batched_tokens: int = 2048  # token budget of one step (chunked prefill)
    max_model_len: int = 4096  # prompt + output must fit
    enable_prefix_caching: bool = False  # vLLM's automatic prefix cache (engine/prefixcache.py); vLLM's
    # default is on: the emulator turns it on unless --no-enable-prefix-caching

    def grown(self, blocks: int) -> EngineConfig:
        """This setting with ``blocks`` more KV blocks (itself for 0): how a what-if, which counts each request's
        blocks apart, stands for blocks that requests sharing a prompt hold once."""
        return dataclasses.replace(self, num_gpu_blocks=self.num_gpu_blocks + blocks) if blocks else self


class Phase(IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2


@dataclass(slots=True, eq=False)
class Request:
    """One request as the engine model sees it.

    NOTE: ``output_tokens`` is the length the engine model runs the request to: the true length in the
    emulator and simulator, the *predicted* length in a predictor's what-if. Progress fields are owned by
    the engine once the request is added.
    """

    req_id: str
    prompt_tokens: int
    output_tokens: int  # tokens produced before the request finishes (>= 1)
    arrival_time: float = 0.0
    num_computed_tokens: int = 0  # tokens whose KV is in the cache (prompt + generated, minus the newest)
    num_output_tokens: int = 0  # tokens produced so far
    first_token_time: float | None = None
    finish_time: float | None = None
    num_preemptions: int = 0
    phase: Phase = Phase.WAITING
    first_scheduled_time: float | None = None  # start of the first step that computed any of its tokens
    # Prefix caching. An Engine with a prefix cache hashes blocks by ``block_hashes`` (chained hashes of the
    # request's full blocks, prompt and, when known, reply; prefixcache.block_hashes); blocks past them are
    # private to the request. An Engine without one (a what-if) takes ``prefix_hit`` instead: the tokens its
    # first admission finds cached (as the instance's cache holds them now).
    block_hashes: Sequence[int] | None = None
    prefix_hit: int = 0


@dataclass(frozen=True, slots=True)
class StepShape:
    """What one engine step's duration depends on (aggregated over the step's requests).

    Decode sequences compute one token each; everything else is a prefill chunk. For a chunk of ``n``
    new tokens over ``c`` cached ones, its attention work is ``n * (c + (n + 1) / 2)`` (causal).
    """

    prefill_tokens: int = 0  # new prompt tokens in the step, all prefill chunks together
    prefill_seqs: int = 0  # number of prefill chunks
    prefill_attn: float = 0.0  # sum over chunks of n * (c + (n + 1) / 2)
    decode_batch: int = 0  # decode sequences
    decode_context: int = 0  # sum over decode sequences of the cached tokens each attends to
    prefill_cached: int = 0  # sum over chunks of their cached prefix c (KV read by the chunk)

    @property
    def total_tokens(self) -> int:
        return self.prefill_tokens + self.decode_batch


@dataclass(slots=True)
class StepResult:
    """What one completed step did; ``produced`` are the requests that emitted one token in it."""

    start: float
    duration: float
    shape: StepShape
    produced: list[Request] = field(default_factory=list)  # first tokens included
    finished: list[Request] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Prediction:
    """A what-if forecast for one new request on one instance (seconds from now)."""

    ttft_s: float
    e2e_s: float
    queue_s: float  # until the request is first scheduled
    running: int
    waiting: int
    kv_free_blocks: int
    # step time the instance would spend on the prompt's uncached tokens beyond its decode steps (0 when the
    # prompt's prefix was not asked about); the cost of a cache miss to everyone else on the instance
    prefill_s: float = 0.0
    prefix_hit: int = 0  # prompt tokens the instance's prefix cache holds (what the what-if did not prefill)
