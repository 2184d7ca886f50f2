"""Step times read from token arrival times (pure; no I/O).

An engine step ends with one token for every decoding sequence, streamed at once, so:

* **decode rows**: while all ``B`` streams of a batch are decoding, the gap between two consecutive tokens of
  one stream is one step of ``B`` decoding sequences. The common window is cut into ``segments`` time slices;
  each gives one row (median gap; 10th/90th percentile as min/max) at the slice's mean context.
* **mixed rows**: when a request is injected into a decoding batch, the step that runs its prefill ends when
  its first token arrives; the background streams' gap that ends at the same moment is that step's length.
* **request overhead**: on an idle engine the first token of a request comes after the API server's work
  (parsing, tokenising, queueing into the engine core), one prefill step and the stream's return path;
  ``TTFT - predicted prefill step`` is what the engine adds per request (computed by the fit, which knows the
  step model).

Client-side timestamps carry the client's own jitter; medians over many gaps take it out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from blockctl.engine.fit import MeasuredRow
from blockctl_agents.profiler.endpoint import Stream

NEAR = 0.5  # a background token belongs to the injected request's step if within this share of a gap


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _row(prefill: int, decode_batch: int, context: int, gaps_s: Sequence[float]) -> MeasuredRow:
    ms = [1e3 * g for g in gaps_s]
    med = statistics.median(ms)
    return MeasuredRow(
        prefill_tokens=prefill, prefill_cached=0, decode_batch=decode_batch, decode_context=context,
        ms_median=med, ms_min=min(med, _pct(ms, 0.1)), ms_max=max(med, _pct(ms, 0.9)),
    )


def decode_rows(runs: Sequence[Sequence[Stream]], segments: int = 3, min_gaps: int = 8) -> list[MeasuredRow]:
    """Rows of pure-decode steps of one batch size, pooled over repeated runs (see the module docstring):
    slice ``k`` of every run goes into row ``k``, so a burst of host load in one run is outvoted."""
    pooled: list[tuple[list[float], list[int]]] = [([], []) for _ in range(segments)]
    batch = 0
    for streams in runs:
        if not streams or any(len(s.tokens) < 3 for s in streams):
            continue
        batch = len(streams)
        lo = max(s.tokens[0] for s in streams)  # every stream has had its prefill
        hi = min(s.tokens[-1] for s in streams)  # none has finished
        width = (hi - lo) / segments
        for s in streams:
            for i in range(1, len(s.tokens)):
                k = int((s.tokens[i] - lo) / width) if width > 0 else -1
                if s.tokens[i - 1] >= lo and 0 <= k < segments and s.tokens[i] <= hi:
                    pooled[k][0].append(s.tokens[i] - s.tokens[i - 1])
                    pooled[k][1].append(s.prompt_tokens + i)  # tokens in the KV cache when token i+1 is computed
    rows = []
    for gaps, contexts in pooled:
        positive = [g for g in gaps if g > 0]
        if len(positive) >= min_gaps:
            rows.append(_row(0, batch, round(statistics.mean(contexts)), positive))
    return rows


def mixed_steps(background: Sequence[Stream], injected: Sequence[Stream]) -> list[tuple[int, float, int]]:
    """``(prompt_tokens, step_s, context)`` for each injected request whose first token lines up with a token
    of most background streams and with no other injected request's first token (a stall can pile them up
    into one step): the gap those background streams saw end there (their median) is its prefill step."""
    out = []
    for inj in injected:
        if not inj.tokens:
            continue
        t_first = inj.tokens[0]
        gaps: list[float] = []
        contexts: list[int] = []
        crowded = False
        for s in background:
            times = s.tokens
            if len(times) < 8 or not times[0] < t_first < times[-1]:
                continue
            j = min(range(1, len(times)), key=lambda i: abs(times[i] - t_first))
            usual = statistics.median(times[i] - times[i - 1] for i in range(max(1, j - 6), j)) if j > 1 else 0.0
            crowded = crowded or any(
                o is not inj and o.tokens and abs(o.tokens[0] - t_first) < NEAR * usual for o in injected
            )
            if abs(times[j] - t_first) <= NEAR * usual:  # this stream's token came with the first token
                gaps.append(times[j] - times[j - 1])
                contexts.append(s.prompt_tokens + j)
        # most background streams line up (a loaded client reads some late) and no other injected request
        # was prefilled in the same step
        if not crowded and 2 * len(gaps) > len(background):
            out.append((inj.prompt_tokens, statistics.median(gaps), round(statistics.mean(contexts))))
    return out


def mixed_rows(steps: Sequence[tuple[int, float, int]], batch: int, min_steps: int = 2) -> list[MeasuredRow]:
    """One row per injected prompt length, its steps pooled (median; a burst of host load is outvoted)."""
    rows = []
    for p in sorted({p for p, _, _ in steps}):
        mine = [(g, c) for q, g, c in steps if q == p]
        if len(mine) >= min_steps:
            rows.append(_row(p, batch, round(statistics.mean(c for _, c in mine)), [g for g, _ in mine]))
    return rows


def request_tail_s(streams: Sequence[Stream]) -> float:
    """Median time from a stream's last token to its end (the final chunks and ``[DONE]``)."""
    tails = [s.done - s.tokens[-1] for s in streams if s.tokens and s.done >= s.tokens[-1]]
    return statistics.median(tails) if tails else 0.0
