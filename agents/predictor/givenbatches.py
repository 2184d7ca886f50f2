"""A request's decode, priced with the batches it actually ran in (pure; fed by the step learner, learn.py).

Each engine step the learner reads is priced by the model in use (before it learns that step's window), and
every member that decoded in it adds that price and its own token gap to its running sums. When a request
ends and the step carrying its last token closes, the two sums compare the model with the engine over
exactly the steps that request saw: its decode time *given the batches*, where the prediction at dispatch
had to guess them (who else arrives and leaves while it runs). The gap between the two errors
(``PredictionErrors.decode`` against ``decode_given_batches``) is what the traffic after dispatch costs a
snapshot what-if; the rest is the model. A request that ran in a step that could not be read (a
non-streaming request in flight, a stall, a long prompt's unseen chunks) is not scored.
"""

from __future__ import annotations

from blockctl_agents.predictor.accuracy import ErrorStats


class GivenBatches:
    """Per in-flight request, [model seconds, measured seconds] of the decode steps it ran in so far (None:
    one of them could not be read); finished requests are scored into ``stats``."""

    __slots__ = ("_ending", "_spans", "stats")

    def __init__(self, stats: ErrorStats) -> None:
        self.stats = stats
        self._spans: dict[str, list[float] | None] = {}
        self._ending: set[str] = set()  # finished, the step with their last token still open

    def step(self, gaps: dict[str, float], seconds: float | None) -> None:
        """A step closed: ``gaps`` its decoding members' time since their previous token, ``seconds`` what the
        model says it took (None: it could not be read). Members that ended with it are scored."""
        for rid, gap in gaps.items():
            if seconds is None:
                self._spans[rid] = None
            elif (span := self._spans.setdefault(rid, [0.0, 0.0])) is not None:
                span[0] += seconds
                span[1] += gap
        for rid in self._ending & gaps.keys():
            self._ending.discard(rid)
            self._settle(rid, True)

    def finished(self, req_id: str, ok: bool, in_open_step: bool) -> None:
        """``req_id`` ended; ``in_open_step``: its last token is in the step still open, so wait for it."""
        if ok and in_open_step:
            self._ending.add(req_id)
        else:
            self._settle(req_id, ok)

    def tracked(self) -> int:
        """Requests with a running sum (in flight, or ended and waiting for their last step)."""
        return len(self._spans)

    def _settle(self, req_id: str, ok: bool) -> None:
        span = self._spans.pop(req_id, None)
        if ok and span is not None and span[1] > 0:
            self.stats.observe(span[0], span[1])
