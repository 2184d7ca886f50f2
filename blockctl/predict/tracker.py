"""What the agent knows about each in-flight request, and the rules that turn it into engine-model progress.

Rules (documented here because the scheduler and the benchmarks rely on them):

* Predicted output length: the ``x-blockctl-predicted-output-tokens`` header; without it, ``max_tokens``
  when the body sets ``ignore_eos`` (the length is then exact), else
  ``min(max_tokens, DEFAULT_OUTPUT_TOKENS)``.
  Always capped so that prompt + output fits ``max_model_len``.
* Progress: streaming requests count one token per SSE content chunk (vLLM and the emulator send one chunk per
  token). Non-streaming requests cannot be observed, so their progress is interpolated from the prediction the
  agent made at their arrival: no token before the predicted first-token time, then one token per predicted
  inter-token interval ``(e2e - ttft) / (L - 1)``, extrapolated at the same pace past the predicted finish.
* Distribution: a request whose length is a distribution (``Tracked.length_dist``, see ``lengths.py``) is
  run to its expected total given the ``p`` tokens it has produced, E[L | L > p]; past the last atom of the
  distribution, or for an exact length, the overrun rule below applies.
* Overrun: a request that has produced ``p >= L`` tokens (``L`` = its predicted length) is assumed to continue
  for ``min(OVERRUN_CAP, max(1, ceil(OVERRUN_FRACTION * p)))`` more tokens, then capped by ``max_tokens`` and
  ``max_model_len``, never below one token. Why: on ShareGPT the mean remaining length of a reply that has
  already produced ``p`` tokens is roughly constant, 180–250 tokens for ``p`` from 32 to 512 (near
  memoryless), so the remainder is capped near the mean reply; below the cap it grows with ``p`` because the
  length prediction was just proven short, and a request the predictor called short and that barely overran
  is more likely to end soon than an average one. Re-evaluated on every prediction, so a request that keeps
  overrunning keeps being pushed further out.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from blockctl.engine.types import Request
from blockctl.predict.lengths import LengthDist

DEFAULT_OUTPUT_TOKENS = 256  # fallback predicted length: about the mean ShareGPT reply
OVERRUN_FRACTION = 0.5
OVERRUN_CAP = DEFAULT_OUTPUT_TOKENS
RECENT_WINDOW_S = 60.0


@dataclass(slots=True)
class Tracked:
    """One in-flight request as the agent sees it; times are ``time.monotonic()`` seconds."""

    req_id: str
    arrival: float
    prompt_tokens: int
    predicted_output_tokens: int
    stream: bool
    max_tokens: int | None = None
    produced: int = 0  # streaming: content chunks seen so far
    first_token_at: float | None = None
    last_token_at: float | None = None
    predicted_ttft_s: float | None = None  # the prediction at dispatch/arrival (see accuracy.py)
    predicted_e2e_s: float | None = None
    overhead_s: float = 0.0  # the calibration included in those predictions (see accuracy.Calibration)
    tpot_factor: float = 1.0
    view_req: Request | None = None  # its engine-model Request, refreshed by view.build_view
    length_dist: LengthDist | None = None  # its length as a distribution (lengths.py); None: exactly predicted


def fallback_output_tokens(max_tokens: int | None, ignore_eos: bool, default: int = DEFAULT_OUTPUT_TOKENS) -> int:
    """Predicted output length when the scheduler sent none (see module docstring)."""
    if max_tokens is not None and max_tokens >= 1:
        return max_tokens if ignore_eos else min(max_tokens, default)
    return default


def estimated_produced(t: Tracked, now: float) -> int:
    """Tokens the request has produced by ``now``: counted when streaming, interpolated otherwise."""
    if t.stream:
        return t.produced
    if t.predicted_ttft_s is None or t.predicted_e2e_s is None:
        return 0
    since_first = now - t.arrival - t.predicted_ttft_s
    if since_first < 0:
        return 0
    length = t.predicted_output_tokens
    tpot = (t.predicted_e2e_s - t.predicted_ttft_s) / (length - 1) if length > 1 else t.predicted_ttft_s
    produced = 1 + int(since_first / max(tpot, 1e-4))
    return min(produced, t.max_tokens) if t.max_tokens else produced


def assumed_total_output(produced: int, predicted: int, max_tokens: int | None, length_cap: int) -> int:
    """Total output length the what-if runs a request to; always at least one token beyond ``produced``."""
    if produced < predicted:
        total = predicted
    else:
        total = produced + min(OVERRUN_CAP, max(1, math.ceil(OVERRUN_FRACTION * produced)))
    if max_tokens is not None:
        total = min(total, max_tokens)
    total = min(total, length_cap)
    return max(total, produced + 1)


class Tracker:
    """The in-flight table plus arrival history; the agent's only mutable request state."""

    def __init__(self) -> None:
        self.inflight: dict[str, Tracked] = {}  # insertion order = arrival order
        self._arrivals: deque[float] = deque()
        self.total_requests = 0
        self.total_completed = 0
        self.total_failed = 0
        self.last_finish_at: float | None = None  # when a request last left the table
        self.last_token_at: float | None = None  # newest streamed token of any request: ~ the last step's end

    def add(self, t: Tracked) -> None:
        self.inflight[t.req_id] = t
        self._arrivals.append(t.arrival)
        self.total_requests += 1

    def token(self, req_id: str, now: float, n: int = 1) -> None:
        t = self.inflight.get(req_id)
        if t is None or n <= 0:
            return
        if t.first_token_at is None:
            t.first_token_at = now
        t.produced += n
        t.last_token_at = now
        self.last_token_at = now

    def finish(self, req_id: str, *, ok: bool, now: float | None = None) -> Tracked | None:
        t = self.inflight.pop(req_id, None)
        if t is not None:
            self.last_finish_at = now
            if ok:
                self.total_completed += 1
            else:
                self.total_failed += 1
        return t

    def recent_requests(self, now: float) -> int:
        """Requests that arrived in the last ``RECENT_WINDOW_S`` seconds."""
        while self._arrivals and self._arrivals[0] < now - RECENT_WINDOW_S:
            self._arrivals.popleft()
        return len(self._arrivals)
