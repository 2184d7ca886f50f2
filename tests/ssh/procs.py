"""Test helper: find local processes by a piece of their command line (the "remote" host is this machine)."""

from __future__ import annotations

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
