"""Local background processes started by blockctl: spawn detached, recognise by command line, stop by PID.

A process is "ours" only while its PID still runs a command line containing every recorded marker (the
module name and ``--port N``): a PID reused by an unrelated program is never signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

from blockctl.errors import ClusterError

# Popen objects of children this process spawned, kept so they are reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session (it outlives the CLI; Ctrl-C does not reach it), output to log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(env or {})},
        )
    _children[proc.pid] = proc
    return proc.pid


Marker = tuple[str, int]  # (python module, --port value) a process of ours was started with


def is_ours(pid: int | None, marker: Marker) -> bool:
    """True when ``pid`` runs (not a zombie) ``-m MODULE`` with ``--port PORT`` on its command line."""
    if pid is None or pid <= 0:
        return False
    _reap(pid)
    try:
        proc = psutil.Process(pid)
        cmdline: list[str] = []
        for _ in range(50):  # a process caught in the middle of exec shows an empty command line for a moment
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            cmdline = proc.cmdline()
            if cmdline:
                break
            time.sleep(0.01)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    module, port = marker
    pairs = set(itertools.pairwise(cmdline))
    return ("-m", module) in pairs and ("--port", str(port)) in pairs


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, sig: int) -> None:
    """Signal the process group the PID leads (spawned processes lead their own), else the PID alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop(targets: Sequence[tuple[int | None, Marker]], *, timeout_s: float = 10.0) -> list[int]:
    """SIGTERM every target that is ours, SIGKILL what is left after ``timeout_s``; returns PIDs stopped."""
    ours = [pid for pid, marker in targets if pid is not None and is_ours(pid, marker)]
    for pid in ours:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    alive = list(ours)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _running(pid)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _running(pid)]
    return ours


def _running(pid: int) -> bool:
    _reap(pid)
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        # As uvicorn binds: connections of a previous server in TIME_WAIT do not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def wait_healthy(
    checks: Sequence[tuple[str, int, Path]], *, timeout_s: float, token: str | None = None
) -> None:
    """Wait until every ``(url, pid, log)`` answers ``GET url`` with 200; else ClusterError naming it.

    Fails early when a process exits, with the tail of its log.
    """
    headers = {"authorization": f"Bearer {token}"} if token else {}
    pending = list(checks)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, headers=headers) as http:
        while pending:
            still = []
            for url, pid, log in pending:
                if not _running(pid):
                    raise ClusterError(
                        f"process {pid} exited before {url} was healthy; its log ({log}) "
                        f"ends:\n{log_tail(log)}",
                        hint=f"less {log}",
                    )
                try:
                    healthy = http.get(url).status_code == 200
                except httpx.HTTPError:
                    healthy = False
                if not healthy:
                    still.append((url, pid, log))
            pending = still
            if pending and time.monotonic() > deadline:
                url, _, log = pending[0]
                raise ClusterError(
                    f"{url} not healthy after {timeout_s:.0f} s; log: {log}", hint=f"less {log}"
                )
            if pending:
                time.sleep(0.1)
