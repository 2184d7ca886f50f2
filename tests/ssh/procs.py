"""Test helpers: local processes by command line (the "remote" host is this machine), ports, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import CLI_WIDTH, bind_loopback, free_port


def procs_with(needle: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line contains ``needle``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if needle in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_gone(*needles: str, timeout: float = 10.0) -> list[str]:
    """Command lines still running after ``timeout`` seconds (a stopped process may take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for needle in needles:
            for proc in procs_with(needle):
                try:
                    left.append(" ".join(proc.cmdline()))
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def group_members(pgid: int, *, timeout: float = 10.0) -> list[int]:
    """Pids of live processes in process group ``pgid`` still there after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        members = []
        for proc in psutil.process_iter(["status"]):
            try:
                if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                    members.append(proc.pid)
            except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                continue
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.1)


def free_port_pair() -> int:
    """A port p such that p and p + 1 were both free a moment ago."""
    for _ in range(50):
        port = free_port()
        try:
            bind_loopback(port + 1).close()
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


def blockctl(state_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOCKCTL_STATE_DIR": str(state_dir), "COLUMNS": str(CLI_WIDTH)}
    return subprocess.run(
        [sys.executable, "-m", "blockctl", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
