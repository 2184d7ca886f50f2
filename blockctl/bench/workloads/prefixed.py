"""Workloads whose requests share prefixes, so an engine's prefix cache and a router's affinity matter.

- ``sharegpt-multiturn``: real ShareGPT conversations replayed turn by turn. Turn k's prompt is the whole
  conversation so far (every earlier user turn and reply, role-labelled) plus user turn k; its reference reply
  is the dataset's reply k, which is also what turn k+1's prompt contains. ``MULTITURN_USERS`` users talk at
  once: each request is the next turn of a user drawn at random among them, and a user whose conversation ends
  is replaced by the next conversation. A user's consecutive turns are therefore ``MULTITURN_USERS`` requests
  apart on average: the think time is ``MULTITURN_USERS / QPS`` seconds (7 s at 36 QPS). Conversations stop
  before a turn whose prompt + reply would pass ``MAX_CONTEXT`` tokens (the seed's 4,096-token model length,
  less a margin for tokenizer differences); turns with a reply under 4 tokens end the conversation.
- ``shared-prefix``: ``TENANTS`` tenants, each with a system prompt of 1,000–3,000 tokens (uniform), and short
  questions on top (log-normal, median 40 tokens); each request is a question of a uniformly drawn tenant;
  replies as ShareGPT's (the synthetic-sharegpt reply length), capped to fit.
- ``generated-shared-prefix``: SGLang's ``generated-shared-prefix`` dataset shape with its defaults
  (``bench_serving.py``: 64 groups x 16 prompts, system prompt 2,048 tokens, question 128, output 256),
  requests in random order.

Items carry ``token_ids`` (the workload tokenizer's ids of the prompt, and for multi-turn of the reply after
it), so the simulator can hash blocks as an engine would; the text is what a live run sends.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from typing import overload

from blockctl.bench.sharegpt import iter_dialogues
from blockctl.bench.workloads.prompts import synth_prompt
from blockctl.bench.workloads.synthetic import SHAREGPT_OUTPUT, LogNormal
from blockctl.bench.workloads.tokenize import encode
from blockctl.bench.workloads.types import WorkItem

MAX_CONTEXT = 4000
MULTITURN_USERS = 256
MIN_REPLY = 4
TENANTS = 150
TENANT_PROMPT = (1000, 3000)
QUESTION = LogNormal(math.log(40.0), 0.6)
GSP_GROUPS, GSP_PER_GROUP, GSP_SYSTEM, GSP_QUESTION, GSP_OUTPUT = 64, 16, 2048, 128, 256
USER, ASSISTANT = "\n\nUSER: ", "\n\nASSISTANT:"


class Joined(Sequence[int]):
    """The first ``length`` tokens of ``parts`` laid end to end, without copying them (turns of a conversation
    and prompts of a tenant share their lists)."""

    __slots__ = ("_length", "_parts")

    def __init__(self, parts: tuple[Sequence[int], ...], length: int) -> None:
        self._parts = parts
        self._length = min(length, sum(len(p) for p in parts))

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(itertools.chain.from_iterable(self._parts), self._length)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        return list(self)[i]


def _conversations(rng: random.Random, split: str | None = None) -> list[list[tuple[str, str]]]:
    """ShareGPT conversations as (user, reply) turn pairs, shuffled; those without one usable pair dropped.
    With ``split``: only those whose first user turn is in a length tagger's split of that name."""
    out = list(_all_conversations())
    if split is not None:
        from blockctl.tagger.dataset import split_of

        out = [c for c in out if split_of(c[0][0]) == split]
    rng.shuffle(out)
    return out


@functools.lru_cache(maxsize=1)
def _all_conversations() -> tuple[list[tuple[str, str]], ...]:
    """Every usable conversation in file order (parsed once per process: the file takes seconds)."""
    return tuple(iter_dialogues())


def _turns(pairs: list[tuple[str, str]]) -> list[WorkItem]:
    """The requests of one conversation, turn by turn (possibly none)."""
    items: list[WorkItem] = []
    ids: list[int] = []
    text = ""
    replies: tuple[int, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    for user, reply in pairs:
        asked = f"{USER}{user}{ASSISTANT}"
        answer = f" {reply}"
        ask_ids, reply_ids = encode(asked), encode(answer)
        if len(reply_ids) < MIN_REPLY or len(ids) + len(ask_ids) + len(reply_ids) > MAX_CONTEXT:
            break
        ids += ask_ids
        text += asked
        messages += (("user", user),)
        items.append(WorkItem(prompt=text, prompt_tokens=len(ids), output_tokens=len(reply_ids),
                              token_ids=Joined((ids,), len(ids) + len(reply_ids)), replies=replies,
                              messages=messages))
        ids += reply_ids
        text += answer
        replies += (len(reply_ids),)
        messages += (("assistant", reply),)
    return items


def sharegpt_multiturn(n: int, seed: int, split: str | None = None) -> list[WorkItem]:
    """``sharegpt-multiturn`` (module docstring); ``sharegpt-multiturn:SPLIT`` keeps the conversations whose
    first user turn is in a length tagger's SPLIT, so a tagger and its reply-history table fitted on the train
    split are measured on conversations they never saw (``test``)."""
    rng = random.Random(seed)
    pool = _conversations(rng, split)
    convs = iter(pool * max(50, 4 * n // max(1, len(pool))))  # reused (reshuffled order of users) if n needs more
    active: list[Iterator[WorkItem]] = []
    out: list[WorkItem] = []
    while len(out) < n:
        while len(active) < MULTITURN_USERS:
            turns = _turns(next(convs))
            if turns:
                active.append(iter(turns))
        k = rng.randrange(len(active))
        item = next(active[k], None)
        if item is None:
            active[k] = active[-1]
            active.pop()
            continue
        out.append(item)
    return out


def _synth_ids(tokens: int, seed: int, *, lead: str = "") -> tuple[str, list[int]]:
    text = lead + synth_prompt(tokens, seed)
    return text, encode(text)


def _shared(systems: list[tuple[str, list[int]]], draws: Iterator[tuple[int, int, int]], n: int,
            seed: int) -> list[WorkItem]:
    """``n`` requests from (tenant, question tokens, reply tokens) draws. Draws are made one request at a time
    from one sequence, so a longer workload starts with the same requests (the simulator grows its sample)."""
    out = []
    for i, (g, q, o) in zip(range(n), draws, strict=False):
        sys_text, sys_ids = systems[g]
        q_text, q_ids = _synth_ids(q, seed * 7_919 + i, lead=" ")
        o = max(1, min(o, MAX_CONTEXT - len(sys_ids) - len(q_ids)))
        out.append(WorkItem(prompt=sys_text + q_text, prompt_tokens=len(sys_ids) + len(q_ids), output_tokens=o,
                            token_ids=Joined((sys_ids, q_ids), len(sys_ids) + len(q_ids))))
    return out


def _lognormal(rng: random.Random, dist: LogNormal, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(rng.lognormvariate(dist.mu, dist.sigma))))


def shared_prefix(n: int, seed: int) -> list[WorkItem]:
    rng = random.Random(seed)
    lo, hi = TENANT_PROMPT
    systems = [_synth_ids(rng.randint(lo, hi), 1_000_000 + 1009 * seed + k) for k in range(TENANTS)]

    def draws() -> Iterator[tuple[int, int, int]]:
        while True:
            yield (rng.randrange(TENANTS), _lognormal(rng, QUESTION, 4, 400),
                   _lognormal(rng, SHAREGPT_OUTPUT, 4, 1000))

    return _shared(systems, draws(), n, seed)


def generated_shared_prefix(n: int, seed: int) -> list[WorkItem]:
    rng = random.Random(seed)
    systems = [_synth_ids(GSP_SYSTEM, 2_000_000 + 1009 * seed + k) for k in range(GSP_GROUPS)]

    def draws() -> Iterator[tuple[int, int, int]]:
        groups = [g for g in range(GSP_GROUPS) for _ in range(GSP_PER_GROUP)]
        while True:  # every group's prompts once per round, rounds shuffled
            rng.shuffle(groups)
            yield from ((g, GSP_QUESTION, GSP_OUTPUT) for g in groups)

    return _shared(systems, draws(), n, seed)


PREFIX_GENERATORS = {
    "sharegpt-multiturn": sharegpt_multiturn,
    "shared-prefix": shared_prefix,
    "generated-shared-prefix": generated_shared_prefix,
}
