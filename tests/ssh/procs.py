"""Test helper: find local processes by a piece of their command line (the "remote" host is this machine)."""

from __future__ import annotations

import os
import time

import psutil


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
