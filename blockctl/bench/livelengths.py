"""Reply lengths in live benchmarks: the load generator's length mode, the emulators' reply-length table, and
a line saying which lengths the router had and whether the replies had the workload's lengths."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from blockctl import replytable
from blockctl.bench.metrics import RequestRecord
from blockctl.bench.wire import LENGTH_MODES, LoadSpec, prompt_text, request_body
from blockctl.bench.workloads import WorkItem, read_workload
from blockctl.errors import ConfigError


def check_length_mode(mode: str, key: str = "--lengths") -> str:
    if mode not in LENGTH_MODES:
        raise ConfigError(
            f"'{mode}': live runs take none (the router predicts, as in production) or oracle (the true "
            "length is sent)", key=key,
            hint="a tagger is the schedulers' own: blockctl up --local --tagger DIR")
    return mode


def reply_table(workload: str, requests: int, seed: int, api: str = "completions") -> dict[str, int]:
    """The table for exactly the prompts a live run of ``workload`` (``requests``, ``seed``, ``api``) sends."""
    return items_table(read_workload(workload, num_requests=requests, seed=seed).items, api, seed)


def items_table(items: Sequence[WorkItem], api: str = "completions", seed: int = 0) -> dict[str, int]:
    """The table for ``items`` sent as the load generator sends them (``api``, ``seed`` of synthesised text)."""
    spec = LoadSpec(endpoint="", model="", api=api, seed=seed)
    keyed = ((replytable.client_prompt(request_body(item, prompt_text(item, i, spec), spec)), item.output_tokens)
             for i, item in enumerate(items))
    return replytable.build((text, n) for text, n in keyed if text is not None)


def lengths_note(records: Sequence[RequestRecord]) -> str:
    """E.g. "router's lengths: fallback 300 (256 tokens); replies of the workload's length: 300 of 300"."""
    done = [r for r in records if r.ok]
    sources = Counter(r.length_source or "unknown" for r in done)
    parts = []
    for source, n in sources.most_common():
        values = sorted({r.predicted_output_tokens for r in done
                         if (r.length_source or "unknown") == source and r.predicted_output_tokens is not None})
        shown = "" if not values else f" ({values[0]} tokens)" if len(values) == 1 else (
            f" ({values[0]}–{values[-1]} tokens)")
        parts.append(f"{source} {n}{shown}")
    matched = sum(r.output_tokens == r.expected_output_tokens for r in done)
    return (f"router's lengths: {', '.join(parts) or 'none answered'}; "
            f"replies of the workload's length: {matched} of {len(done)}")
