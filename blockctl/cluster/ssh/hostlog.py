"""The per-host bootstrap log (``<state>/logs/ssh/<host>.log``): stage starts and ends, commands, exit codes.

Only commands and their output tails are written: commands never contain secrets (the token travels by SFTP)
and never prompts. Writes are small appends to a local file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from blockctl.errors import HostError

TAIL_LINES = 20


def tail_text(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def host_log_path(logs_dir: Path, host: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in host)
    return logs_dir / "ssh" / f"{safe}.log"


class HostLog:
    """Appends timestamped lines for one host; ``stage(name)`` brackets a stage and records its outcome."""

    def __init__(self, path: Path, host: str) -> None:
        self.path = path
        self.host = host
        self.current_stage = "connect"
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with self.path.open("a", encoding="utf-8") as f:
            for part in line.rstrip("\n").splitlines() or [""]:
                f.write(f"{stamp} [{self.current_stage}] {part}\n")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current_stage = name
        start = time.monotonic()
        self.write("begin")
        try:
            yield
        except HostError as exc:
            self.write(f"FAILED after {time.monotonic() - start:.1f}s: {exc.message}")
            if exc.stderr_tail:
                self.write(exc.stderr_tail)
            raise
        except BaseException as exc:
            self.write(f"FAILED after {time.monotonic() - start:.1f}s: {type(exc).__name__}: {exc}")
            raise
        self.write(f"done in {time.monotonic() - start:.1f}s")
