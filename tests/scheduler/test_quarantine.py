"""The out-of-rotation bookkeeping, pure: who is out, backoff of the probes, deadline misses in a row."""

from __future__ import annotations

from blockctl.scheduler.quarantine import MAX_PROBE_S, MISSES_OUT, Quarantine


def test_out_until_back_with_probe_backoff() -> None:
    q = Quarantine()
    assert q.put("a", "engine sick", now=10.0) and not q.put("a", "again", now=11.0)
    delays = []
    for _ in range(7):
        delays.append(q.out["a"].next_probe_in())
        q.probe_failed("a", "still sick")
    assert delays[:5] == [0.25, 0.5, 1.0, 2.0, 4.0] and max(delays) == MAX_PROBE_S
    assert q.serving(("a", "b")) == ("b",)
    gone = q.back("a")
    assert gone is not None and gone.since == 10.0 and gone.reason == "still sick"
    assert q.serving(("a", "b")) == ("a", "b") and q.back("a") is None


def test_everyone_out_means_nobody_is_excluded() -> None:
    q = Quarantine()
    q.put("a", "x", 0.0)
    q.put("b", "x", 0.0)
    assert q.serving(("a", "b")) == ("a", "b")


def test_only_consecutive_deadline_misses_take_an_instance_out() -> None:
    q = Quarantine()
    for _ in range(MISSES_OUT - 1):
        assert not q.missed("a")
    q.answered("a")
    assert not any(q.missed("a") for _ in range(MISSES_OUT - 1))
    assert q.missed("a")
