"""One forwarded request's deadlines and abort switch, shared by the scheduler and the agent.

A ``Call`` is attached to the connection an exchange runs on (``Http1Pool.stream(..., call=...)``). From then
on one timer watches it: the first body byte (or, without a body yet, the head) must come within
``first_byte_s``; after that no gap between body chunks may exceed ``idle_s``. ``abort(reason)`` — from a
deadline, a caller that went away, an instance declared sick or a drain — cuts the connection at once, so
the upstream sees its caller leave and aborts the request; the pending read fails with the reason.

Cheap on purpose (it is on the hot path): one timer per call, re-armed lazily, a clock read per chunk.
"""

from __future__ import annotations

import asyncio


class Call:
    __slots__ = ("_last", "_loop", "_timer", "_transport", "first_byte_s", "idle_s", "reason", "streaming")

    def __init__(self, *, first_byte_s: float | None = None, idle_s: float | None = None) -> None:
        self.first_byte_s = first_byte_s
        self.idle_s = idle_s
        self.reason: str | None = None  # why it was aborted; None while it was not
        self.streaming = False  # a body byte came
        self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def attach(self, writer: asyncio.StreamWriter) -> None:
        """The exchange starts on ``writer``'s connection: arm the first-byte deadline."""
        self._transport = writer.transport
        if self.reason is not None:
            self._transport.abort()  # type: ignore[attr-defined]
            return
        self._loop = asyncio.get_running_loop()
        if self.first_byte_s is not None and self._timer is None:
            self._timer = self._loop.call_later(self.first_byte_s, self._expired)

    def touch(self) -> None:
        """A body chunk arrived."""
        if self._loop is not None:
            self._last = self._loop.time()
        if not self.streaming:
            self.streaming = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.idle_s is not None and self._loop is not None:
                self._timer = self._loop.call_later(self.idle_s, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if not self.streaming:
            self.abort(f"no first byte within {self.first_byte_s:.1f} s")
            return
        assert self._loop is not None and self.idle_s is not None
        due = self._last + self.idle_s
        if self._loop.time() >= due:
            self.abort(f"no data for {self.idle_s:.1f} s")
        else:
            self._timer = self._loop.call_at(due, self._expired)

    def abort(self, reason: str) -> None:
        """Cut the exchange now (no-op after the first abort); the pending read fails with ``reason``."""
        if self.reason is not None:
            return
        self.reason = reason
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]
        self.detach()

    def detach(self) -> None:
        """The exchange is over: stop watching it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None


# A 503 from an agent with this header: the request did not run on its engine (never sent there, or aborted
# there before any byte came back), so the scheduler may send it to another instance. The value says why.
UNSTARTED_HEADER = "x-blockctl-unstarted"


class Flight:
    """One client request while it is in flight, across the instances tried: ``abort`` reaches its call."""

    __slots__ = ("_registry", "call", "reason")

    def __init__(self, registry: set[Flight] | None = None) -> None:
        self.call: Call | None = None
        self.reason: str | None = None
        self._registry = registry
        if registry is not None:
            registry.add(self)

    def abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if self.call is not None:
                self.call.abort(reason)

    def finish(self) -> None:
        if self._registry is not None:
            self._registry.discard(self)
            self._registry = None
