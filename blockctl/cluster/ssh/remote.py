"""Shell snippets run on a host over SSH: detached start, liveness, stop, HTTP wait, log tail (pure builders).

Every builder returns a POSIX ``sh`` command string with each value shell-quoted. Processes are started as
session leaders (``setsid``), so ``pid == pgid`` and stopping kills the whole group (vLLM forks workers).
Exit codes of ``wait_http``: 0 healthy, 3 the process died, 4 timed out.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

WAIT_DIED = 3
WAIT_TIMEOUT = 4

q = shlex.quote


def detached(command: str, *, env_file: str | None, log_path: str, pid_path: str, cwd: str) -> str:
    """Start ``command`` in its own session, output appended to ``log_path``; prints and stores the pid.

    The printed pid is the command's own (``setsid`` and ``sh -c exec`` do not fork), so its group is the
    command's group. ``command`` is already a shell command line (rendered from a template with quoted
    values). The environment comes from ``env_file`` (see ``env_file_text``), so no value is on a command line.
    """
    inner = f". {q(env_file)} && exec {command}" if env_file else f"exec {command}"
    # Separate statements, not an `a && b &` list: that would background a subshell holding the SSH
    # channel open, and $! would be that subshell instead of the process itself.
    return (
        f"mkdir -p {q(cwd)} && cd {q(cwd)} || exit 1; "
        f'echo "=== start $(date -u +%FT%TZ)" >> {q(log_path)}; '
        f"setsid nohup sh -c {q(inner)} >> {q(log_path)} 2>&1 < /dev/null & "
        f"pid=$!; echo $pid > {q(pid_path)}; echo $pid"
    )


def env_file_text(env: Mapping[str, str]) -> str:
    """``export K='v'`` lines for ``.``-sourcing; keys are shell identifiers (the spec checks them)."""
    return "".join(f"export {k}={q(v)}\n" for k, v in sorted(env.items()))


def alive(pid: int | str, needle: str) -> str:
    """Exit 0 when ``pid`` runs and its command line contains ``needle`` (guards against pid reuse).

    ``pid`` may be a number or a shell variable reference such as ``"$pid"`` (inserted as is). The command
    line is matched with its arguments joined by spaces and a trailing space.
    """
    return f"kill -0 {pid} 2>/dev/null && tr '\\0' ' ' < /proc/{pid}/cmdline | grep -qF -- {q(needle)}"


def read_pid(pid_path: str) -> str:
    return f"cat {q(pid_path)} 2>/dev/null || true"


def stop_group(pid: int | str, *, grace_s: float = 10.0) -> str:
    """TERM the process group led by ``pid``, wait up to ``grace_s`` seconds, then KILL it; always exits 0.

    ``pid`` may be a shell variable reference (``"$pid"``); run it in a subshell then, as it ends in ``exit``.
    """
    ticks = max(1, int(grace_s * 5))
    return (
        f"kill -TERM -- -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null || exit 0; "
        f"i=0; while [ $i -lt {ticks} ] && kill -0 -- -{pid} 2>/dev/null; do sleep 0.2; i=$((i+1)); done; "
        f"kill -KILL -- -{pid} 2>/dev/null; exit 0"
    )


_WAIT_PY = """
import os, sys, time, urllib.request
url, pid, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                sys.exit(3)
    except FileNotFoundError:
        sys.exit(3)
    time.sleep(0.5)
sys.exit(4)
"""


def wait_http(python: str, url: str, pid: int, timeout_s: float) -> str:
    """Poll ``url`` from the host itself until it answers 200, the process dies, or the timeout passes."""
    return f"{q(python)} -c {q(_WAIT_PY.strip())} {q(url)} {pid} {timeout_s:g}"


def tail(path: str, lines: int = 40, *, follow: bool = False) -> str:
    flag = "-F" if follow else ""
    return f"tail -n {int(lines)} {flag} {q(path)} 2>/dev/null || echo {q(f'(no log at {path})')}"


def write_private(path: str) -> str:
    """Read stdin into ``path`` with mode 0600 from the start (the file never exists with wider rights)."""
    return f'umask 077 && mkdir -p "$(dirname {q(path)})" && cat > {q(path)} && chmod 600 {q(path)}'
