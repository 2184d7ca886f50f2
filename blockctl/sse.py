"""Server-sent events on a relay: forward whole events only, and end a broken stream with an error event.

A relay that forwards bytes as they come may have sent half an event when its upstream breaks. An error
event written after that would be glued to the half event: the client would parse one event with broken
JSON instead of a clean error. ``EventFramer`` holds back an incomplete event (the bytes after the last
blank line) until the rest arrives, so what the client has is always a sequence of whole events, and an
error event appended after a break starts on an event boundary. The fast path (a chunk that ends with a
blank line, nothing held) returns the chunk itself.
"""

from __future__ import annotations

import json

_MAX_HELD = 1 << 20  # an "event" larger than this is not SSE as expected: pass it through unframed
_ENDS = (b"\n\n", b"\r\n\r\n")


class EventFramer:
    """Cuts a byte stream after its last complete SSE event; ``feed`` returns what may be sent now."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._held and chunk.endswith(_ENDS):
            return chunk
        data = self._held + chunk if self._held else chunk
        lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
        cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)  # 0: no complete event yet
        if cut == 0 and len(data) <= _MAX_HELD:
            self._held = data
            return b""
        if cut == 0:
            cut = len(data)
        self._held = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """What is held (the stream ended normally: the last bytes go out as they are)."""
        held, self._held = self._held, b""
        return held

    @property
    def held(self) -> int:
        """Bytes of an incomplete event not sent (dropped when the stream breaks)."""
        return len(self._held)


def error_event(message: str, *, type: str, code: str | None = None) -> bytes:
    """One SSE event carrying OpenAI's error JSON."""
    err = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return f"data: {json.dumps(err)}\n\n".encode()
