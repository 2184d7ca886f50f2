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

NEAR = 0.35  # a background token belongs to the injected request's step if within this share of a gap


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


def decode_rows(streams: Sequence[Stream], segments: int = 3, min_gaps: int = 8) -> list[MeasuredRow]:
    """Rows of pure-decode steps of ``len(streams)`` sequences (see the module docstring)."""
    if not streams or any(len(s.tokens) < 3 for s in streams):
        return []
    lo = max(s.tokens[0] for s in streams)  # every stream has had its prefill
    hi = min(s.tokens[-1] for s in streams)  # none has finished
    if hi <= lo:
        return []
    rows: list[MeasuredRow] = []
    width = (hi - lo) / segments
    for k in range(segments):
        a, b = lo + k * width, lo + (k + 1) * width
        gaps: list[float] = []
        contexts: list[int] = []
        for s in streams:
            for i in range(1, len(s.tokens)):
                if a < s.tokens[i] <= b and s.tokens[i - 1] >= lo:
                    gaps.append(s.tokens[i] - s.tokens[i - 1])
                    contexts.append(s.prompt_tokens + i)  # tokens in the KV cache when token i+1 is computed
        positive = [g for g in gaps if g > 0]
        if len(positive) >= min_gaps:
            ctx = round(statistics.mean(contexts))
            rows.append(_row(0, len(streams), ctx, positive))
    return rows


def mixed_rows(background: Sequence[Stream], injected: Sequence[Stream]) -> list[MeasuredRow]:
    """One row per injected request whose first token lines up with a token of every background stream."""
    rows: list[MeasuredRow] = []
    for inj in injected:
        if not inj.tokens:
            continue
        t_first = inj.tokens[0]
        gaps: list[float] = []
        contexts: list[int] = []
        for s in background:
            times = s.tokens
            if len(times) < 3 or not times[0] < t_first < times[-1]:
                break
            j = min(range(1, len(times)), key=lambda i: abs(times[i] - t_first))
            usual = statistics.median(times[i] - times[i - 1] for i in range(max(1, j - 6), j))  \
                if j > 1 else times[j] - times[j - 1]
            if abs(times[j] - t_first) > NEAR * usual:
                break
            gaps.append(times[j] - times[j - 1])
            contexts.append(s.prompt_tokens + j)
        else:
            if gaps:
                rows.append(_row(inj.prompt_tokens, len(background), round(statistics.mean(contexts)), gaps))
    return rows


def request_tail_s(streams: Sequence[Stream]) -> float:
    """Median time from a stream's last token to its end (the final chunks and ``[DONE]``)."""
    tails = [s.done - s.tokens[-1] for s in streams if s.tokens and s.done >= s.tokens[-1]]
    return statistics.median(tails) if tails else 0.0
