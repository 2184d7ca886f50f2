"""Reading secret files (the agent token, the scheduler's API keys): refused when others can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from blockctl.errors import ConfigError


def read_secret_file(path: str | Path, *, what: str, key: str | None = None) -> str:
    """The text of ``path``; ConfigError (naming file and key) when it cannot be read or when its mode lets
    group or others read it: a secret readable by every user of the host guards nothing."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read {what} file: {reason}", source=str(p), key=key) from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} file must not be readable by group or others", source=str(p), key=key,
                          hint=f"chmod 600 {p}")
    return text
